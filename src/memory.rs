//! Memory the allocator holds free, given back to the system.
//!
//! glibc keeps what a thread freed in that thread's arena for later use, so the
//! transient work of a big registry (a list of 10,000 devices: a reader's page cache,
//! its rows and JSON; the availability check over every device) stayed in the
//! daemon's RSS long after it was done: ~4 MiB of a 20 MB budget. The daemon gives it
//! back after such work.

/// Returns the heap's free pages, in every arena, to the kernel.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and leaves every live allocation as it is;
    // it only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
