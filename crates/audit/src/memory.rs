//! [`MemoryBackend`]: an in-process [`AuditBackend`] that keeps each tenant's chain in memory.
//! For tests and tools that need a real chain without a database; nothing survives a restart.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::chain::link;
use crate::event::{AuditEvent, ChainedEvent};
use crate::writer::{AuditBackend, AuditError};

/// Hash-chained audit log held in memory, one chain per tenant.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    chains: Mutex<BTreeMap<String, Vec<ChainedEvent>>>,
    batches: Mutex<Vec<usize>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn chains(&self) -> MutexGuard<'_, BTreeMap<String, Vec<ChainedEvent>>> {
        // A panic while holding the lock cannot leave a chain half-linked (each push is one
        // complete event), so a poisoned lock is safe to reuse.
        self.chains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of `tenant`'s chain, oldest first.
    pub fn events(&self, tenant: &str) -> Vec<ChainedEvent> {
        self.chains().get(tenant).cloned().unwrap_or_default()
    }

    /// Number of events stored over all tenants.
    pub fn len(&self) -> usize {
        self.chains().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes of the batches appended so far, in order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl AuditBackend for MemoryBackend {
    async fn append(&self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        let len = batch.len();
        {
            let mut chains = self.chains();
            for ev in batch {
                let chain = chains.entry(ev.tenant.clone()).or_default();
                let linked = link(chain.last(), ev.clone());
                chain.push(linked);
            }
        }
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(len);
        Ok(())
    }
}
