//! Every heap block is wiped when it is freed.
//!
//! Private keys pass through code Segel does not own: ring's `RsaKeyPair` and `EcdsaKeyPair`
//! keep the private exponent, primes and scalar in their own allocations and free them without
//! clearing; `pem`, `pkcs8`, `p12-keystore` and `rcgen` decode keys into plain `Vec`s; serde
//! decodes passphrases from request bodies into plain `String`s. Wrapping Segel's own buffers
//! in `Zeroizing` cannot reach any of those copies. Wiping at the allocator does: whatever held
//! key material, its bytes are overwritten before the block goes back to the allocator, so a
//! later allocation, a core dump or a swapped page no longer shows them once the signer, the
//! request or the batch that used them is dropped.
//!
//! Blocks of [`MAPPED`] bytes and more (PDFs, not keys) are mapped from the kernel on their
//! own: they grow with `mremap`, which moves pages instead of copying them, and go back to the
//! kernel with `munmap`, which clears pages before any process sees them again. They leave no
//! copy behind either, and cost neither a `memset` nor a second block while they grow, so a
//! 20 MB PDF still signs in about 1.1 times its size.
//!
//! What this does not cover: values on the stack (ring's intermediate values during one
//! signature), and memory still in use (a signer is alive exactly for one approval, one batch,
//! or, for the organisation seal, the life of the process).
//!
//! The cost is one `memset` per freed byte of small blocks, measured with the signing and load
//! benchmarks (README, "Performance").

use std::alloc::{GlobalAlloc, Layout};

/// An allocator (the system's, in Segel) that wipes each block before releasing it.
pub struct WipeOnFree<A>(pub A);

/// Overwrite `len` bytes at `ptr` with zeros in a way the optimiser keeps.
///
/// A `memset` right before `free` is a dead store that LLVM removes. On the architectures Segel
/// is built for, an empty `asm!` block that takes the pointer and may read memory makes the
/// zeros observable, so they stay; elsewhere volatile writes do the same, more slowly.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
#[inline]
unsafe fn wipe(ptr: *mut u8, len: usize) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: the caller guarantees `ptr..ptr+len` is writable; the asm block does nothing
    // but is declared as possibly reading through `ptr`.
    unsafe {
        std::ptr::write_bytes(ptr, 0, len);
        std::arch::asm!("/* {0} */", in(reg) ptr, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    for i in 0..len {
        // SAFETY: as above, one byte at a time.
        unsafe { std::ptr::write_volatile(ptr.add(i), 0) };
    }
}

/// Blocks at least this large are mapped on their own (see the module documentation).
pub const MAPPED: usize = 1 << 20;

fn page_size() -> usize {
    static PAGE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    match PAGE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let p = if p > 0 { p as usize } else { 4096 };
            PAGE.store(p, std::sync::atomic::Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Whether a block of `size` bytes aligned to `align` is (or would be) mapped on its own. Rust
/// frees and resizes a block with the layout it was allocated with, so the answer for a block
/// never changes while it lives.
fn mapped(size: usize, align: usize) -> bool {
    size >= MAPPED && align <= page_size()
}

fn round_to_pages(size: usize) -> usize {
    let page = page_size();
    size.div_ceil(page) * page
}

/// # Safety
/// `size` must be non-zero.
unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no file, no fixed address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            round_to_pages(size),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: small blocks go to the inner allocator with the same layout contract, and `dealloc`
// and `realloc` only add writes to the block being released, which the caller still owns;
// `realloc` moves small blocks with the inner allocator's `alloc` and `dealloc`. Large blocks
// are whole anonymous mappings (page-aligned, so any alignment up to a page holds), released
// with `munmap` of the same rounded length and resized with `mremap`.
unsafe impl<A: GlobalAlloc> GlobalAlloc for WipeOnFree<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout.size(), layout.align()) {
            return unsafe { map(layout.size()) };
        }
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout.size(), layout.align()) {
            // Fresh anonymous pages are zero.
            return unsafe { map(layout.size()) };
        }
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe {
            if mapped(layout.size(), layout.align()) {
                libc::munmap(ptr.cast(), round_to_pages(layout.size()));
                return;
            }
            wipe(ptr, layout.size());
            self.0.dealloc(ptr, layout)
        }
    }

    /// The system `realloc` may move a small block, growing or shrinking, and free the old one
    /// without clearing it, so small blocks are moved here: allocate, copy, wipe the old block,
    /// free it. A large block stays a mapping and is resized by the kernel, pages moved rather
    /// than copied.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            let align = layout.align();
            match (mapped(layout.size(), align), mapped(new_size, align)) {
                (true, true) => {
                    let p = libc::mremap(
                        ptr.cast(),
                        round_to_pages(layout.size()),
                        round_to_pages(new_size),
                        libc::MREMAP_MAYMOVE,
                    );
                    if p == libc::MAP_FAILED {
                        std::ptr::null_mut()
                    } else {
                        p.cast()
                    }
                }
                _ => {
                    let new_layout = Layout::from_size_align_unchecked(new_size, align);
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::sync::Mutex;

    /// The system allocator, recording for every block it is asked to release whether the
    /// block was all zeros at that moment, and forbidding its own `realloc`.
    #[derive(Default)]
    struct Inspect {
        released: Mutex<Vec<(usize, bool)>>,
    }

    unsafe impl GlobalAlloc for Inspect {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let clean = unsafe { std::slice::from_raw_parts(ptr, layout.size()) }
                .iter()
                .all(|&b| b == 0);
            self.released.lock().unwrap().push((layout.size(), clean));
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            assert!(
                new_size <= layout.size(),
                "growth must not reach the inner realloc"
            );
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    fn filled(a: &WipeOnFree<Inspect>, layout: Layout) -> *mut u8 {
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 0xA5, layout.size());
            p
        }
    }

    #[test]
    fn freed_blocks_reach_the_allocator_wiped() {
        let a = WipeOnFree(Inspect::default());
        for size in [1usize, 32, 4096, MAPPED - 1] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            unsafe { a.dealloc(filled(&a, layout), layout) };
        }
        let released = a.0.released.lock().unwrap().clone();
        assert_eq!(released.len(), 4);
        assert!(released.iter().all(|&(_, clean)| clean), "{released:?}");
    }

    #[test]
    fn resizing_moves_the_contents_and_wipes_the_old_block() {
        let a = WipeOnFree(Inspect::default());
        let layout = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let p = filled(&a, layout);
            for i in 0..64 {
                *p.add(i) = i as u8 + 1;
            }
            let q = a.realloc(p, layout, 1 << 16);
            assert!(!q.is_null());
            let moved = std::slice::from_raw_parts(q, 64);
            assert!(moved.iter().enumerate().all(|(i, &b)| b == i as u8 + 1));
            assert_eq!(*a.0.released.lock().unwrap(), vec![(64, true)]);
            let big = Layout::from_size_align(1 << 16, 8).unwrap();
            let r = a.realloc(q, big, 32);
            let kept = std::slice::from_raw_parts(r, 32);
            assert!(kept.iter().enumerate().all(|(i, &b)| b == i as u8 + 1));
            a.dealloc(r, Layout::from_size_align(32, 8).unwrap());
        }
        let released = a.0.released.lock().unwrap().clone();
        // Shrinking moved the block too: the 64 KiB one was released wiped.
        assert_eq!(released, vec![(64, true), (1 << 16, true), (32, true)]);
    }

    /// Large blocks never reach the inner allocator: they are mappings, grown by the kernel
    /// with their contents, shrunk back below the threshold into an inner block, and freed.
    #[test]
    fn large_blocks_are_mappings() {
        let a = WipeOnFree(Inspect::default());
        let layout = Layout::from_size_align(MAPPED, 16).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % page_size(), 0);
            for i in (0..MAPPED).step_by(4093) {
                *p.add(i) = (i % 251) as u8;
            }
            let q = a.realloc(p, layout, 8 * MAPPED);
            assert!(!q.is_null());
            for i in (0..MAPPED).step_by(4093) {
                assert_eq!(*q.add(i), (i % 251) as u8);
            }
            *q.add(8 * MAPPED - 1) = 7;
            let big = Layout::from_size_align(8 * MAPPED, 16).unwrap();
            let z = a.alloc_zeroed(big);
            assert!(
                std::slice::from_raw_parts(z, 8 * MAPPED)
                    .iter()
                    .all(|&b| b == 0)
            );
            a.dealloc(z, big);
            assert!(
                a.0.released.lock().unwrap().is_empty(),
                "mappings bypass the inner allocator"
            );
            // Shrinking below the threshold moves the contents into an inner block.
            let r = a.realloc(q, big, 4096);
            for i in (0..4096).step_by(4093) {
                assert_eq!(*r.add(i), (i % 251) as u8);
            }
            a.dealloc(r, Layout::from_size_align(4096, 16).unwrap());
        }
        assert_eq!(*a.0.released.lock().unwrap(), vec![(4096, true)]);
    }
}
