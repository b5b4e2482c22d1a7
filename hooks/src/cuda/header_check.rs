//! Checks the table against NVIDIA's own headers: every entry's `PFN_<base>_v<since>` typedef
//! must exist in `cudaTypedefs.h` with exactly the table's signature, and the ABI structs must
//! have `cuda.h`'s sizes. The headers are not shipped with the project, so the check is an
//! ignored test run by `hooks/check-cuda-headers.sh`.

use std::fmt::Write as _;
use std::process::Command;

use super::*;

macro_rules! signatures {
    ($(
        $symbol:ident { base: $base:ident, since: $since:literal, per_thread: $per_thread:literal, kind: $kind:ident }
            extern "C" fn($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        /// Every entry: symbol, base, since, per-thread, parameter types as written.
        const SIGNATURES: &[Signature] =
            &[$((stringify!($symbol), stringify!($base), $since, $per_thread, &[$(stringify!($ty)),*]),)*];
    };
}

type Signature = (
    &'static str,
    &'static str,
    i32,
    bool,
    &'static [&'static str],
);

crate::cuda_entry_points!(signatures);

/// The C spelling of a Rust type of the table (`*mut *const c_char` → `const char **`).
fn c_type(rust: &str) -> String {
    let mut rest = rust.trim();
    let mut pointers = Vec::new();
    while let Some(after) = rest.strip_prefix('*') {
        let after = after.trim_start();
        let (qualifier, tail) = after.split_once(' ').unwrap_or((after, ""));
        pointers.push(qualifier == "const");
        rest = tail.trim_start();
    }
    let mut c = match rest {
        "c_uint" => "unsigned int",
        "c_int" => "int",
        "usize" => "size_t",
        "u64" => "unsigned long long",
        "u8" => "unsigned char",
        "f32" => "float",
        "c_char" => "char",
        "c_void" => "void",
        other => other,
    }
    .to_string();
    for (depth, is_const) in pointers.iter().rev().enumerate() {
        if *is_const && depth == 0 {
            c = format!("const {c} *");
        } else {
            c.push_str(" *");
        }
    }
    c.replace("* *", "**")
}

/// The C file that fails to compile if the table and the headers disagree.
fn check_program() -> String {
    let mut c = String::from("#define __CUDA_API_VERSION_INTERNAL 1\n#include <cudaTypedefs.h>\n");
    for (symbol, base, since, per_thread, args) in SIGNATURES {
        let suffix = if *per_thread {
            &symbol[symbol.len() - 5..]
        } else {
            ""
        };
        let params: Vec<String> = args.iter().map(|t| c_type(t)).collect();
        let params = if params.is_empty() {
            "void".to_string()
        } else {
            params.join(", ")
        };
        let _ = writeln!(c, "typedef CUresult (*table_{symbol})({params});");
        let _ = writeln!(
            c,
            "void check_{symbol}(PFN_{base}_v{since}{suffix} header) {{ table_{symbol} table = header; (void)table; }}"
        );
    }
    let sizes = [
        ("CUuuid", size_of::<CUuuid>()),
        ("CUDA_ARRAY_DESCRIPTOR", size_of::<CUDA_ARRAY_DESCRIPTOR>()),
        (
            "CUDA_ARRAY3D_DESCRIPTOR",
            size_of::<CUDA_ARRAY3D_DESCRIPTOR>(),
        ),
        ("CUmemAllocationProp", size_of::<CUmemAllocationProp>()),
        ("CUmemAccessDesc", size_of::<CUmemAccessDesc>()),
        ("CUmemPoolProps", size_of::<CUmemPoolProps>()),
        ("CUlaunchAttribute", size_of::<CUlaunchAttribute>()),
        ("CUlaunchConfig", size_of::<CUlaunchConfig>()),
        ("CUexecAffinityParam", size_of::<CUexecAffinityParam>()),
        ("CUctxCreateParams", size_of::<CUctxCreateParams>()),
    ];
    for (name, size) in sizes {
        let _ = writeln!(
            c,
            "_Static_assert(sizeof({name}) == {size}, \"size of {name}\");"
        );
    }
    let constants = [
        ("CUDA_ERROR_OUT_OF_MEMORY", CUDA_ERROR_OUT_OF_MEMORY),
        ("CUDA_ERROR_NOT_FOUND", CUDA_ERROR_NOT_FOUND),
        ("CUDA_ERROR_NOT_SUPPORTED", CUDA_ERROR_NOT_SUPPORTED),
        ("CUDA_ERROR_INVALID_HANDLE", CUDA_ERROR_INVALID_HANDLE),
        (
            "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
            CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
        ),
        (
            "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT",
            CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        ),
        (
            "CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED",
            CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED,
        ),
        (
            "CU_MEMPOOL_ATTR_USED_MEM_HIGH",
            CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        ),
        (
            "CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT",
            CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
        ),
    ];
    for (name, value) in constants {
        let _ = writeln!(c, "_Static_assert({name} == {value}, \"value of {name}\");");
    }
    c
}

#[test]
fn rust_types_read_as_c() {
    assert_eq!(c_type("*mut *const c_char"), "const char **");
    assert_eq!(c_type("*mut *mut c_void"), "void **");
    assert_eq!(
        c_type("*const CUmemAllocationProp"),
        "const CUmemAllocationProp *"
    );
    assert_eq!(c_type("usize"), "size_t");
    assert!(check_program().contains("PFN_cuMemAlloc_v3020"));
    assert!(check_program().contains("PFN_cuLaunchKernel_v7000_ptsz"));
}

#[test]
#[ignore = "needs NVIDIA's cuda.h and cudaTypedefs.h: run hooks/check-cuda-headers.sh"]
fn table_matches_the_cuda_headers() {
    let include = std::env::var("CUDA_INCLUDE_DIR")
        .expect("CUDA_INCLUDE_DIR must name a directory with cuda.h and cudaTypedefs.h");
    let dir = tempfile_dir();
    let source = dir.join("hami_hooks_header_check.c");
    std::fs::write(&source, check_program()).expect("write the check program");
    let output = Command::new("cc")
        .args([
            "-fsyntax-only",
            "-Wall",
            "-Werror",
            "-Wno-unused-function",
            "-I",
            &include,
        ])
        .arg(&source)
        .output()
        .expect("cc must be installed");
    assert!(
        output.status.success(),
        "the table disagrees with {include}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hami-hooks-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}
