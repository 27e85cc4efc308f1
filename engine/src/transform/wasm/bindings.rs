//! Host bindings of `wit/transform.wit` (world `plugin`, export `artgen:transform/transformer@0.1.0`).
//! Exports are async so every call can be raced against the wall-clock deadline: running wasm yields on
//! fuel, and a guest blocked in a host call (e.g. sleeping) is dropped by a timer.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});
