//! Compiles `../mlp.tdsl` into `$OUT_DIR/mlp.tdslb` at build time (`tdsl_compiler::bundle::build_script`,
//! which also tells Cargo to rebuild when the model or anything it imports changes).

fn main() {
    if let Err(e) = tdsl_compiler::bundle::build_script("../mlp.tdsl") {
        // A build script fails the build by failing; the message names the problem (diagnostics included).
        eprintln!("{e}");
        std::process::exit(1);
    }
}
