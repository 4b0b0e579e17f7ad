//! Event-stream slots: each open `GET /v2/events` holds one of the server's and one of its
//! tenant's, so the streams (each with a bounded buffer in the engine) are capped for the
//! whole server and one tenant cannot hold them all.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The free slots.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    /// Free slots of the whole server.
    server: Arc<Semaphore>,
    max: usize,
    /// Streams open per tenant (a tenant with none has no entry).
    open: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    max_per_tenant: usize,
}

/// One open stream's slots, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    _server: OwnedSemaphorePermit,
    tenant: Arc<str>,
    open: Arc<Mutex<HashMap<Arc<str>, usize>>>,
}

impl StreamSlots {
    /// `max` streams at once, `max_per_tenant` of them for one tenant.
    pub(crate) fn new(max: usize, max_per_tenant: usize) -> Self {
        Self { server: Arc::new(Semaphore::new(max)), max, open: Arc::default(), max_per_tenant }
    }

    /// A slot for a stream of `tenant`: the tenant's cap is checked first, then the server's.
    ///
    /// # Errors
    /// Either cap is reached (429 `10011`).
    pub(crate) fn take(&self, tenant: &str) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock();
        let held = open.get(tenant).copied().unwrap_or(0);
        if held >= self.max_per_tenant {
            return Err(ApiError::TooManyTenantStreams { limit: self.max_per_tenant });
        }
        let server = self
            .server
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyStreams { limit: self.max })?;
        let tenant: Arc<str> = tenant.into();
        open.insert(tenant.clone(), held + 1);
        Ok(StreamSlot { _server: server, tenant, open: self.open.clone() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(held) = open.get_mut(&self.tenant) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_cap_comes_first_and_slots_come_back() {
        let slots = StreamSlots::new(3, 2);
        let a1 = slots.take("a").unwrap();
        let a2 = slots.take("a").unwrap();
        assert!(matches!(slots.take("a"), Err(ApiError::TooManyTenantStreams { limit: 2 })));
        let b1 = slots.take("b").unwrap();
        assert!(matches!(slots.take("b"), Err(ApiError::TooManyStreams { limit: 3 })));
        drop(a1);
        let b2 = slots.take("b").unwrap();
        assert!(matches!(slots.take("a"), Err(ApiError::TooManyStreams { .. })));
        drop((a2, b1, b2));
        assert!(slots.open.lock().is_empty(), "no entry is kept for a tenant with no stream");
        let _again = [slots.take("a").unwrap(), slots.take("a").unwrap(), slots.take("c").unwrap()];
    }
}
