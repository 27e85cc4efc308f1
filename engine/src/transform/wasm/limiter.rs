//! Our `ResourceLimiter` (design/plugins.md §7): wasmtime's `StoreLimits` caps each memory on its own,
//! so we sum all linear memories ourselves, record the peak, and trap on growth past the limit.

use wasmtime::ResourceLimiter;

/// Fixed per-store counts (§7).
const MAX_INSTANCES: usize = 50;
const MAX_TABLES: usize = 50;
const MAX_MEMORIES: usize = 16;
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

#[derive(Debug)]
pub(super) struct Limiter {
    limit: usize,
    total: usize,
    peak: usize,
    /// The last growth we allowed, taken back if wasmtime then fails it.
    last_grant: usize,
    /// Set when a growth past the limit was refused: the run fails as `TransformMemoryLimit`.
    pub exceeded: bool,
}

impl Limiter {
    pub fn new(limit: u64) -> Self {
        Limiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            total: 0,
            peak: 0,
            last_grant: 0,
            exceeded: false,
        }
    }

    pub fn peak(&self) -> u64 {
        self.peak as u64
    }
}

/// The error a refused growth traps with (the flag, not this text, classifies the failure).
#[derive(Debug)]
pub(super) struct MemoryLimitExceeded;

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("linear memory limit exceeded")
    }
}

impl std::error::Error for MemoryLimitExceeded {}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current);
        let total = self.total.saturating_add(delta);
        if total > self.limit {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryLimitExceeded));
        }
        self.total = total;
        self.peak = self.peak.max(total);
        self.last_grant = delta;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.total = self.total.saturating_sub(self.last_grant);
        self.last_grant = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
