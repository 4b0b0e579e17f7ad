//! Event-stream slots: each open `GET /v2/events` holds one of the server's and one of its
//! tenant's, so the streams (each with a bounded buffer in the engine) are capped for the
//! whole server and one tenant cannot hold them all.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::ApiError;

/// The streams open, and the caps.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    open: Arc<Mutex<Open>>,
    max: usize,
    max_per_tenant: usize,
}

/// Streams open: in all, and per tenant (a tenant with none has no entry).
#[derive(Debug, Default)]
struct Open {
    all: usize,
    tenants: HashMap<Arc<str>, usize>,
}

/// One open stream's slots, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    tenant: Arc<str>,
    open: Arc<Mutex<Open>>,
}

impl StreamSlots {
    /// `max` streams at once, `max_per_tenant` of them for one tenant.
    pub(crate) fn new(max: usize, max_per_tenant: usize) -> Self {
        Self { open: Arc::default(), max, max_per_tenant }
    }

    /// A slot for a stream of `tenant`: the tenant's cap is checked first, then the server's.
    ///
    /// # Errors
    /// Either cap is reached (429 `10011`).
    pub(crate) fn take(&self, tenant: &str) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock();
        let held = open.tenants.get(tenant).copied().unwrap_or(0);
        if held >= self.max_per_tenant {
            return Err(ApiError::TooManyTenantStreams { limit: self.max_per_tenant });
        }
        if open.all >= self.max {
            return Err(ApiError::TooManyStreams { limit: self.max });
        }
        let tenant: Arc<str> = tenant.into();
        open.all += 1;
        open.tenants.insert(tenant.clone(), held + 1);
        Ok(StreamSlot { tenant, open: self.open.clone() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        open.all -= 1;
        if let Some(held) = open.tenants.get_mut(&self.tenant) {
            *held -= 1;
            if *held == 0 {
                open.tenants.remove(&self.tenant);
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
        assert!(slots.open.lock().tenants.is_empty(), "no entry is kept for a tenant with no stream");
        assert_eq!(slots.open.lock().all, 0);
        let _again = [slots.take("a").unwrap(), slots.take("a").unwrap(), slots.take("c").unwrap()];
    }
}
