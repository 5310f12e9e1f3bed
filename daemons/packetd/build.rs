//! Builds packetd's XDP program from C (`ebpf/packetd/packetd.bpf.c`, see
//! `docs/decisions/0020-ebpf-language.md`) with clang for the `bpf` target, into
//! `$OUT_DIR/packetd.bpf.o`, which `src/xdp.rs` embeds with `include_bytes!`.
//!
//! Needs `clang` (override with `$CLANG`), `libbpf-dev` (`bpf/bpf_helpers.h`) and
//! `linux-libc-dev`; `scripts/install-packetd-build-deps.sh` installs them on Debian. When they
//! are missing the build fails and names that script: it never embeds an empty object, so a
//! binary that builds always carries a real program. The object is little- or big-endian to
//! match the target (`bpfel`/`bpfeb`), and rebuilt when the C source changes.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src = manifest.join("../../ebpf/packetd/packetd.bpf.c");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("packetd.bpf.o");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").unwrap_or_else(|_| "little".to_owned());
    let target = if endian == "big" { "bpfeb" } else { "bpfel" };
    // <asm/types.h> lives in the multiarch directory of the *build* machine's headers; the BPF
    // program only uses fixed-size types from it, so any architecture's copy is equivalent.
    let mut args = vec![
        "-O2".to_owned(),
        "-g".to_owned(),
        "-Wall".to_owned(),
        "-Werror".to_owned(),
        "-target".to_owned(),
        target.to_owned(),
    ];
    for dir in [
        "/usr/include/x86_64-linux-gnu",
        "/usr/include/aarch64-linux-gnu",
    ] {
        if std::path::Path::new(dir).join("asm/types.h").exists() {
            args.push(format!("-I{dir}"));
            break;
        }
    }
    args.extend([
        "-c".to_owned(),
        src.display().to_string(),
        "-o".to_owned(),
        out.display().to_string(),
    ]);

    let hint = "run scripts/install-packetd-build-deps.sh (as root) to install clang, libbpf-dev and linux-libc-dev";
    match Command::new(&clang).args(&args).status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed ({s}) compiling {}; {hint}", src.display()),
        Err(e) => panic!("cannot run {clang}: {e}; {hint}"),
    }
    let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    assert!(
        len > 0,
        "{} is empty after compiling; {hint}",
        out.display()
    );
}
