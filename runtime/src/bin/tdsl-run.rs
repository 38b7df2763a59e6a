//! `tdsl-run`: runs a tdsl bundle; a thin wrapper around `tdsl_runtime::cli::main`.

use std::io::IsTerminal;

fn main() {
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let code = tdsl_runtime::cli::main(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        stderr_is_terminal,
    );
    std::process::exit(code);
}
