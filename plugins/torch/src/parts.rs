//! Calls on the CPU run as parts in parallel: a call of several rows is cut into consecutive
//! parts of about equal tokens, and each part runs its own forward pass on a thread of its
//! own, with the intra-op threads shared out among the parts.
//!
//! Why: libtorch parallelises inside each op, and on the small matrices of a serving batch
//! that scales poorly. all-MiniLM-L6-v2 on 2 cores of an AMD EPYC: one text runs 1.28× faster
//! on two threads than on one, 32 texts 1.9×, while two independent calls on one thread each
//! make 1.95–2.0× at any size. So a server whose batches are small (many callers of one text
//! each) lost a fifth of its throughput to batches of 2 to 8 rows; cut into parts, those run
//! as fast per text as full batches.
//!
//! A part's thread count is set per thread: OpenMP's team size (`omp_set_num_threads`) and
//! MKL's (`mkl_set_num_threads_local`) are both settings of the calling thread, so the worker
//! thread's own calls (one row) keep every intra-op thread. `at::set_num_threads` is not used:
//! it also changes the process-wide default that libtorch gives every new thread.

use ember_plugin_api::parts::even;
use rayon::prelude::*;
use std::ffi::c_int;
use std::ops::Range;
use std::sync::OnceLock;

extern "C" {
    /// libgomp's, which libtorch_cpu links: the team size of this thread's parallel regions.
    fn omp_set_num_threads(threads: c_int);
}

/// A setter of this thread's MKL threads.
type MklThreads = unsafe extern "C" fn(c_int) -> c_int;

/// MKL's `mkl_set_num_threads_local` as the libtorch_cpu this plugin runs on exports it (the
/// C name is a macro for `MKL_Set_Num_Threads_Local`; the lower-case symbol is Fortran's,
/// which takes a pointer); none where libtorch is built without MKL.
fn mkl_threads() -> Option<MklThreads> {
    static SETTER: OnceLock<Option<MklThreads>> = OnceLock::new();
    *SETTER.get_or_init(|| {
        use libloading::os::unix::{Library, RTLD_LAZY};
        // SAFETY: libtorch_cpu is loaded already (the plugin links it): opening it again only
        // counts a reference, which is kept (forgotten) so that the symbol stays valid.
        let lib = unsafe { Library::open(Some("libtorch_cpu.so"), RTLD_LAZY | libc::RTLD_NOLOAD) }
            .ok()?;
        // SAFETY: MKL declares it `int MKL_Set_Num_Threads_Local(int)`.
        let setter = unsafe { lib.get::<MklThreads>(b"MKL_Set_Num_Threads_Local\0") }
            .ok()
            .map(|s| *s);
        std::mem::forget(lib);
        setter
    })
}

/// Sets how many threads this thread's libtorch ops (OpenMP regions and MKL) use.
fn use_threads(threads: usize) {
    let threads = c_int::try_from(threads.max(1)).unwrap_or(c_int::MAX);
    // SAFETY: both set a per-thread setting and take any positive count.
    unsafe {
        omp_set_num_threads(threads);
        if let Some(mkl) = mkl_threads() {
            mkl(threads);
        }
    }
}

/// The threads that run a CPU model's parts.
pub struct Parts {
    pool: rayon::ThreadPool,
    /// The intra-op threads a call may use in all.
    threads: usize,
}

/// How much larger than an even share the largest part may be: past it, a call waits on its
/// largest part longer than one call on all threads would take.
const MOST_UNEVEN: f64 = 1.25;

impl Parts {
    /// The part threads of every CPU model of the process, made by the first model that asks
    /// for them, whose calls use `threads` intra-op threads (one pool: models share the cores
    /// rather than each keep threads, and their memory, of its own); none for one thread.
    pub fn shared(threads: usize) -> Result<Option<&'static Parts>, String> {
        static SHARED: OnceLock<Parts> = OnceLock::new();
        if threads < 2 {
            return Ok(None);
        }
        if let Some(parts) = SHARED.get() {
            return Ok(Some(parts));
        }
        let parts = Parts::new(threads)?;
        Ok(Some(SHARED.get_or_init(|| parts)))
    }

    /// A pool of `threads` part threads.
    fn new(threads: usize) -> Result<Parts, String> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ember-torch-part-{i}"))
            // libtorch sets a thread's intra-op threads on its first op, to the process-wide
            // default; asking for them first makes that happen now, before a part sets them.
            .start_handler(|_| {
                tch::get_num_threads();
            })
            .build()
            .map_err(|e| format!("starting the part threads: {e}"))?;
        Ok(Parts { pool, threads })
    }

    /// The parts a call of rows of `tokens` live tokens each runs as (see [`plan`]).
    pub fn plan(&self, tokens: &[usize]) -> Vec<Range<usize>> {
        plan(tokens, self.threads)
    }

    /// Runs `run` on every part at once, each on its share of the intra-op threads, and
    /// returns their results in the parts' order.
    pub fn run<T: Send>(
        &self,
        parts: &[Range<usize>],
        run: impl Fn(Range<usize>) -> T + Sync,
    ) -> Vec<T> {
        let share = (self.threads / parts.len().max(1)).max(1);
        self.pool.install(|| {
            parts
                .par_iter()
                .with_max_len(1)
                .map(|part| {
                    use_threads(share);
                    run(part.clone())
                })
                .collect()
        })
    }
}

/// Cuts rows of `tokens` live tokens each into consecutive parts of about equal tokens, one
/// per thread of `threads` at most: one part (the whole call) when the rows cannot be shared
/// out evenly enough.
pub fn plan(tokens: &[usize], threads: usize) -> Vec<Range<usize>> {
    let total: usize = tokens.iter().sum();
    for count in (2..=threads.min(tokens.len())).rev() {
        let parts = even(tokens, count);
        let largest = parts
            .iter()
            .map(|p| tokens[p.clone()].iter().sum::<usize>())
            .max()
            .unwrap_or(0);
        if largest as f64 <= MOST_UNEVEN * total as f64 / count as f64 {
            return parts;
        }
    }
    std::iter::once(0..tokens.len()).collect()
}
