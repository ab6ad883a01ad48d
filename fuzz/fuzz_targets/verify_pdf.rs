#![no_main]
//! See `segel_fuzz::verify_pdf` for what this target covers.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = segel_fuzz::verify_pdf(data);
});
