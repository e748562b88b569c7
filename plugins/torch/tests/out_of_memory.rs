//! Running out of memory inside a forward call: the call answers OutOfMemory (so the host
//! halves the batch), and the model keeps answering. Memory runs out for real: the process's
//! address space is capped (RLIMIT_AS) just above what it uses, which is why this test is alone
//! in its test binary.

#![cfg(target_os = "linux")]

mod common;

use common::{load, tokens};
use ember_plugin_api::{ErrorCode, ModelKind, Pooling};

#[repr(C)]
struct Rlimit {
    current: u64,
    max: u64,
}

extern "C" {
    fn getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
    fn setrlimit(resource: i32, limit: *const Rlimit) -> i32;
}

/// RLIMIT_AS: the largest address space, in bytes.
const RLIMIT_AS: i32 = 9;

/// Bytes of address space the process has now (VmSize).
fn address_space() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Runs `f` with the address space capped at `headroom` bytes above its current size.
fn with_memory_cap<T>(headroom: u64, f: impl FnOnce() -> T) -> T {
    let mut saved = Rlimit { current: 0, max: 0 };
    // SAFETY: getrlimit and setrlimit read or write the one struct they are given.
    unsafe {
        assert_eq!(getrlimit(RLIMIT_AS, &mut saved), 0);
        let cap = Rlimit {
            current: (address_space() + headroom).min(saved.max),
            max: saved.max,
        };
        assert_eq!(setrlimit(RLIMIT_AS, &cap), 0);
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    // SAFETY: as above; lowering only the soft limit lets it be raised back.
    unsafe {
        assert_eq!(setrlimit(RLIMIT_AS, &saved), 0);
    }
    result.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

#[test]
fn a_batch_that_runs_out_of_memory_answers_out_of_memory_and_the_next_call_works() {
    let model = load("tiny-bert-cls", ModelKind::Embed, Pooling::Mean);
    let small = tokens(64, &[64, 20]);
    let before = model.embed_tokens(&small).into_result().unwrap();
    // 32768 rows of 64 tokens: 48 MiB of ids and masks, then 256 MiB for each [rows, seq,
    // hidden 32] tensor of the forward pass, more than the 128 MiB of headroom.
    let big = tokens(64, &vec![64; 32768]);
    let result = with_memory_cap(128 << 20, || model.embed_tokens(&big).into_result());
    let e = result.expect_err("the forward pass fitted in 128 MiB");
    assert_eq!(e.code, ErrorCode::OutOfMemory, "{}", e.message);
    assert!(e.message.starts_with("embedding tokens: "), "{}", e.message);
    assert!(!e.message.contains("panicked"), "{}", e.message);
    let after = model.embed_tokens(&small).into_result().unwrap();
    assert_eq!(after, before);
}
