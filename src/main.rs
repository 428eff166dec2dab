//! The `cairn` binary; everything lives in the library's [`cairn::cli`].

fn main() -> std::process::ExitCode {
    cairn::cli::main()
}
