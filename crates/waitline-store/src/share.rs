//! A node's share of the buckets when several nodes use one PostgreSQL store: it says it is
//! alive, takes the buckets it is the preferred owner of (see [`crate::placement`]) and
//! those abandoned (see [`Store::take_share`]), renews what it holds, and tells which
//! buckets it holds but another live node now prefers (to release once their tenants are
//! no longer served here).

use crate::postgres::nodes::Node;
use crate::{Error, Location, Result, Store, placement};

/// What one turn of [`Store::take_share`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Share {
    /// Buckets newly taken, with their epochs: replay their tenants before serving them.
    pub gained: Vec<(u32, u64)>,
    /// Buckets held (renewed) that another live node prefers: release them
    /// ([`Store::release`]) once their tenants are no longer served here.
    pub surplus: Vec<u32>,
    /// Buckets whose lease was found lost since the last turn (by this turn's renewal, or by
    /// the writer's fencing in between), with the epoch lost: stop serving their tenants
    /// (a bucket lost and taken again is in both lists: forget, then load).
    pub lost: Vec<(u32, u64)>,
}

impl Store {
    /// One turn of a node sharing the buckets (call it every third of the lease, instead
    /// of [`Store::renew`]): writes this node's heartbeat with `url` (where other nodes
    /// reach it), then takes, among the buckets free or expired, those it prefers among
    /// the live nodes and those abandoned (never leased, held by a node no longer live, or
    /// lapsed more than a lease ago: their preferred node did not take them), and renews
    /// those it holds.
    ///
    /// # Errors
    /// A SQLite store ([`Error::NoLeases`]), or PostgreSQL refused or is out of reach.
    pub fn take_share(&self, url: &str) -> Result<Share> {
        let Location::Postgres { config, .. } = &self.shared.location else { return Err(Error::NoLeases) };
        let (leases, _) = self.leases()?;
        let (me, buckets) = (config.node.clone(), config.buckets);
        let url = url.to_owned();
        let (preferred, abandoned) = leases.run(move |l| {
            l.heartbeat(&url)?;
            let live = l.live_nodes()?;
            let ids: Vec<&str> = live.iter().map(|n| n.id.as_str()).collect();
            let preferred = placement::preferred_buckets(buckets, &me, &ids);
            let others: Vec<u32> = (0..buckets).filter(|b| !preferred.contains(b)).collect();
            Ok((preferred, l.abandoned(&others)?))
        })?;
        let before = self.owned();
        let mut wanted: Vec<u32> = before.iter().map(|h| h.0).collect();
        wanted.extend(preferred.iter().chain(&abandoned));
        wanted.sort_unstable();
        wanted.dedup();
        let held = self.acquire(&wanted)?;
        Ok(Share {
            gained: held.iter().filter(|h| !before.contains(h)).copied().collect(),
            surplus: held
                .iter()
                .map(|h| h.0)
                .filter(|b| !preferred.contains(b) && !abandoned.contains(b))
                .collect(),
            lost: self.untold_losses(),
        })
    }

    /// Renews the leases this node holds and writes its heartbeat, taking nothing: a node
    /// loading buckets it took calls it every third of the lease meanwhile, so that a load
    /// longer than the lease lets none of its leases lapse and it stays live. Returns the
    /// leases found lost, as [`Store::renew`].
    ///
    /// # Errors
    /// As [`Store::take_share`].
    pub fn renew_share(&self, url: &str) -> Result<Vec<(u32, u64)>> {
        self.renew_with_heartbeat(Some(url.to_owned()))
    }

    /// Says this node is gone (it stops cleanly): the other nodes no longer count it live,
    /// so the buckets it releases go to their new preferred owners at those nodes' next
    /// turn. Its leases are released when the store is dropped.
    ///
    /// # Errors
    /// As [`Store::take_share`].
    pub fn leave(&self) -> Result<()> {
        self.leases()?.0.run(|l| l.leave())
    }

    /// The nodes seen within one lease length (by their heartbeats), by id.
    ///
    /// # Errors
    /// As [`Store::take_share`].
    pub fn live_nodes(&self) -> Result<Vec<Node>> {
        self.leases()?.0.run(|l| l.live_nodes())
    }

    /// The node holding `bucket`'s lease now (not expired), with its URL, if any.
    ///
    /// # Errors
    /// As [`Store::take_share`].
    pub fn owner(&self, bucket: u32) -> Result<Option<Node>> {
        self.leases()?.0.run(move |l| l.owner(bucket))
    }

    /// Every bucket held now (lease not expired) with its owner and URL, in one query: a
    /// node keeps this to forward requests without a query each.
    ///
    /// # Errors
    /// As [`Store::take_share`].
    pub fn owners(&self) -> Result<Vec<(u32, Node)>> {
        self.leases()?.0.run(|l| l.owners())
    }
}
