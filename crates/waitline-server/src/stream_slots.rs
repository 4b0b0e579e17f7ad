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
    /// The configured cap of one tenant, if any (else [`StreamSlots::tenant_cap`]'s default).
    max_per_tenant: Option<usize>,
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
    /// `max` streams at once, `max_per_tenant` of them for one tenant (`None`: the default
    /// of [`StreamSlots::tenant_cap`]).
    pub(crate) fn new(max: usize, max_per_tenant: Option<usize>) -> Self {
        Self { open: Arc::default(), max, max_per_tenant }
    }

    /// One tenant's cap when `tenants` tenants have keys: the configured one, else every slot
    /// for a tenant alone (it has no neighbour to leave slots to), a quarter of them (at least
    /// one) when there are several.
    fn tenant_cap(&self, tenants: usize) -> usize {
        self.max_per_tenant.unwrap_or(if tenants <= 1 { self.max } else { (self.max / 4).max(1) })
    }

    /// A slot for a stream of `tenant`, one of `tenants` with keys: the tenant's cap is
    /// checked first, then the server's.
    ///
    /// # Errors
    /// Either cap is reached (429 `10011`).
    pub(crate) fn take(&self, tenant: &str, tenants: usize) -> Result<StreamSlot, ApiError> {
        let cap = self.tenant_cap(tenants);
        let mut open = self.open.lock();
        let held = open.tenants.get(tenant).copied().unwrap_or(0);
        if held >= cap {
            return Err(ApiError::TooManyTenantStreams { limit: cap });
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
        let slots = StreamSlots::new(3, Some(2));
        let a1 = slots.take("a", 3).unwrap();
        let a2 = slots.take("a", 3).unwrap();
        assert!(matches!(slots.take("a", 3), Err(ApiError::TooManyTenantStreams { limit: 2 })));
        let b1 = slots.take("b", 3).unwrap();
        assert!(matches!(slots.take("b", 3), Err(ApiError::TooManyStreams { limit: 3 })));
        drop(a1);
        let b2 = slots.take("b", 3).unwrap();
        assert!(matches!(slots.take("a", 3), Err(ApiError::TooManyStreams { .. })));
        drop((a2, b1, b2));
        assert!(slots.open.lock().tenants.is_empty(), "no entry is kept for a tenant with no stream");
        assert_eq!(slots.open.lock().all, 0);
        let _again = [slots.take("a", 3).unwrap(), slots.take("a", 3).unwrap(), slots.take("c", 3).unwrap()];
    }

    /// A tenant's count goes down by one per stream closed, not to nothing: its cap still
    /// holds against the streams it keeps open.
    #[test]
    fn a_closed_stream_gives_back_one_of_its_tenants_slots() {
        let slots = StreamSlots::new(10, Some(3));
        let mut open: Vec<_> = (0..3).map(|_| slots.take("a", 2).unwrap()).collect();
        open.pop();
        open.push(slots.take("a", 2).unwrap());
        assert!(matches!(slots.take("a", 2), Err(ApiError::TooManyTenantStreams { limit: 3 })));
        assert_eq!(slots.open.lock().tenants.get("a"), Some(&3));
        drop(open);
        assert!(slots.open.lock().tenants.is_empty());
    }

    /// Unless configured, a tenant alone may hold every slot; with several tenants, a quarter.
    #[test]
    fn the_default_tenant_cap_follows_the_tenants_with_keys() {
        let slots = StreamSlots::new(8, None);
        let alone: Vec<_> = (0..8).map(|_| slots.take("a", 1).unwrap()).collect();
        assert!(matches!(slots.take("a", 1), Err(ApiError::TooManyTenantStreams { limit: 8 })));
        drop(alone);
        let shared: Vec<_> = (0..2).map(|_| slots.take("a", 2).unwrap()).collect();
        assert!(matches!(slots.take("a", 2), Err(ApiError::TooManyTenantStreams { limit: 2 })));
        assert_eq!(StreamSlots::new(3, None).tenant_cap(5), 1, "at least one");
        assert_eq!(StreamSlots::new(64, Some(5)).tenant_cap(1), 5, "the configured cap, even alone");
        drop(shared);
    }
}
