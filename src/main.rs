//! `keysync` binary: everything lives in the library; this maps the result
//! to the process exit code.
fn main() -> std::process::ExitCode {
    keysync::run::main()
}
