//go:build wasip1

package main

// exitWithCode is `wasi:cli/exit.exit-with-code` (WASI 0.2.12), imported directly. The preview1 adapter's
// proc_exit (what os.Exit calls) reports every non-zero status as plain failure, which the host sees as 1:
// exit 2 (invalid config) would become 1 (rejected). wit/ declares this import's type for the adapting step
// (tests/src/plugins.rs embeds it); command-sample does the same in Rust for the same reason.
//
//go:wasmimport wasi:cli/exit@0.2.12 exit-with-code
func exitWithCode(code uint32)
