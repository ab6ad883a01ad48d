#![no_main]
//! See `segel_fuzz::stamp_image` for what this target covers.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = segel_fuzz::stamp_image(data);
});
