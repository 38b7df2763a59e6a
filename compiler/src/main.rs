//! `tdslc`, the tdsl compiler's command line; everything it does is in `tdsl_compiler::cli`.

use std::io::IsTerminal;

fn main() {
    let code = tdsl_compiler::cli::main(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        std::io::stderr().is_terminal(),
    );
    std::process::exit(code);
}
