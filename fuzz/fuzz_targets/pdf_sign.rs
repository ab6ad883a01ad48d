#![no_main]
//! See `segel_fuzz::pdf_sign` for what this target covers.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = segel_fuzz::pdf_sign(data);
});
