//! The memory of glibc's per-thread arenas, kept bounded while workers and the writer allocate.
//!
//! glibc gives each thread that contends for the allocator an arena of its own, and keeps in
//! each arena what was freed there. The daemon keeps that default: its workers parse while the
//! writer writes, both allocating all the time, and with one arena for every thread they would
//! wait on its lock. Two settings keep the memory of many arenas bounded:
//! - `large_allocations_mapped`: a large buffer (a request body, a parsed array's vector) is
//!   mapped on its own at any size, and unmapped when freed. glibc's default raises this
//!   threshold to the largest block freed so far, after which such buffers stay in their arena.
//! - `release_freed_memory`: after a large request, its worker hands the free pages of every
//!   arena back to the system (`malloc_trim`, for large bodies only).

/// A request or answer body larger than this makes its worker return freed memory to the
/// system once it has answered (`release_freed_memory`).
pub(super) const LARGE_BODY: usize = 1 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn large_allocations_mapped() {
    // Allocations from 256 KiB up get pages of their own, returned to the system when freed.
    // SAFETY: mallopt only sets an allocator parameter, under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the system;
    // it takes each arena's lock and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn large_allocations_mapped() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn release_freed_memory() {}
