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
//! What this does not cover: values on the stack (ring's intermediate values during one
//! signature), and memory still in use (a signer is alive exactly for one approval, one batch,
//! or, for the organisation seal, the life of the process).
//!
//! The cost is one `memset` per freed byte, measured with the signing benchmarks (README,
//! "Performance").

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

// SAFETY: every method forwards to the inner allocator with the same layout contract;
// `dealloc` and `realloc` only add writes to the block being released, which the caller still
// owns, and `realloc` moves blocks with the inner allocator's `alloc` and `dealloc`.
unsafe impl<A: GlobalAlloc> GlobalAlloc for WipeOnFree<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe {
            wipe(ptr, layout.size());
            self.0.dealloc(ptr, layout)
        }
    }

    /// The system `realloc` may move a block and free the old one without clearing it, so a
    /// move is done here: allocate, copy, wipe the old block, free it. Shrinking wipes the tail
    /// first and then lets the inner allocator shrink (or move) a block that no longer holds
    /// anything beyond `new_size`.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            if new_size <= layout.size() {
                wipe(ptr.add(new_size), layout.size() - new_size);
                return self.0.realloc(ptr, layout, new_size);
            }
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.0.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                wipe(ptr, layout.size());
                self.0.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::sync::Mutex;

    /// The system allocator, recording for every block it is asked to release whether the
    /// block was all zeros at that moment, and forbidding its own `realloc` (a move through it
    /// would free the old block unwiped).
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
        for size in [1usize, 32, 4096, 1 << 20] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            unsafe { a.dealloc(filled(&a, layout), layout) };
        }
        let released = a.0.released.lock().unwrap().clone();
        assert_eq!(released.len(), 4);
        assert!(released.iter().all(|&(_, clean)| clean), "{released:?}");
    }

    #[test]
    fn growing_moves_the_contents_and_wipes_the_old_block() {
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
        assert_eq!(released, vec![(64, true), (32, true)]);
    }
}
