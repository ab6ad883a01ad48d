//! Peak memory of signing a 20 MB PDF, in a process of its own:
//! `cargo bench --bench peak_rss`. Prints the file size, the resident set before signing (with
//! the input loaded) and the peak during signing (VmHWM from /proc/self/status).

#[path = "../tests/it/common.rs"]
mod common;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--child") {
        let path = std::env::args().last().unwrap();
        let before = status_kb("VmRSS:");
        let input = std::fs::read(&path).unwrap();
        let size_kb = input.len() as u64 / 1024;
        let signed = segel::pdf::sign_pdf(
            input,
            &common::dev_ec(),
            &Default::default(),
            &common::now(),
        )
        .unwrap();
        let peak = status_kb("VmHWM:");
        println!(
            "file {:.1} MB; baseline RSS {:.1} MB; peak RSS {:.1} MB; peak above baseline {:.2}x the file",
            size_kb as f64 / 1024.0,
            before as f64 / 1024.0,
            peak as f64 / 1024.0,
            (peak - before) as f64 / size_kb as f64
        );
        assert!(signed.bytes.len() > size_kb as usize * 1024);
        return;
    }
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` smoke mode
    }
    let dir = common::tempdir();
    let path = common::write(dir.path(), "big.pdf", &common::big_pdf(20 << 20));
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .arg("--child")
        .arg(&path)
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}
