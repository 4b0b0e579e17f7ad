//! Replay: each tenant's base snapshot, then its records after it, checked as they are read
//! (framing, checksums, dense numbers), the same over every database.

use crate::{Entry, Error, Replayed, Result, Store, frame};

impl Store {
    /// Hands every tenant's snapshot and journal to `visit`, tenant by tenant (see
    /// [`Entry`] for the order). A damaged record, or a missing one, stops the replay with
    /// [`Error::Corrupt`]; with `recover_truncate` it and the tenant's later records are
    /// deleted instead (reported in [`Replayed::truncated`]) and the other tenants go on.
    /// A damaged snapshot always stops it. An `Err` from `visit` stops it too.
    pub fn replay(&self, visit: impl FnMut(Entry<'_>) -> Result<(), String>) -> Result<Replayed> {
        self.replay_where(|_| true, visit)
    }

    /// [`Store::replay`] of the tenants of `buckets` only (a node taking buckets over).
    pub fn replay_buckets(
        &self,
        buckets: &[u32],
        visit: impl FnMut(Entry<'_>) -> Result<(), String>,
    ) -> Result<Replayed> {
        self.replay_where(|tenant| buckets.contains(&self.bucket_of(tenant)), visit)
    }

    fn replay_where(
        &self,
        keep: impl Fn(&str) -> bool,
        mut visit: impl FnMut(Entry<'_>) -> Result<(), String>,
    ) -> Result<Replayed> {
        let mut conn = self.reader()?;
        let mut out = Replayed::default();
        let refused = |tenant: &str, seq, detail| Error::Replay { tenant: tenant.into(), seq, detail };
        let from_delivered = self.shared.options.replay_from_delivered;
        for tenant in conn.tenants()?.iter().filter(|t| keep(t)) {
            out.tenants += 1;
            let mut last = 0;
            let base = crate::compact::base_snapshot(conn.as_mut(), tenant, from_delivered)?;
            let snap = match base {
                Some(seq) => conn.snapshot(tenant, seq)?.map(|data| (seq, data)),
                None => None,
            };
            if let Some((seq, stored)) = snap {
                let data = match frame::decode_run(tenant, seq, &stored).next() {
                    Some(Ok((_, data))) => data,
                    Some(Err((_, why))) => return Err(self.corrupt("snapshot", tenant, seq, why)),
                    None => return Err(self.corrupt("snapshot", tenant, seq, "empty")),
                };
                visit(Entry::Snapshot { tenant, seq, data }).map_err(|d| refused(tenant, seq, d))?;
                out.snapshots += 1;
                last = seq;
            }
            let mut damage: Option<(u64, String)> = None;
            conn.rows_after(tenant, last, &mut |row| {
                if row.first > last + 1 {
                    damage =
                        Some((last + 1, format!("missing (the next record stored is number {})", row.first)));
                    return Ok(false);
                }
                for item in frame::decode_run(tenant, row.first, &row.records) {
                    match item {
                        // Covered by the snapshot (a row can straddle it).
                        Ok((seq, _)) if seq <= last => {}
                        Ok((seq, data)) => {
                            visit(Entry::Record { tenant, seq, data })
                                .map_err(|d| refused(tenant, seq, d))?;
                            out.records += 1;
                            last = seq;
                        }
                        Err((seq, why)) => {
                            damage = Some((seq, why.to_owned()));
                            return Ok(false);
                        }
                    }
                }
                if last < row.last {
                    damage = Some((last + 1, format!("missing (its row ends at {last}, not {})", row.last)));
                    return Ok(false);
                }
                Ok(true)
            })?;
            if let Some((first_bad, detail)) = damage {
                if !self.shared.options.recover_truncate {
                    return Err(self.corrupt("record", tenant, first_bad, &detail));
                }
                // Damage in a record the base snapshot covers (its row straddles it) costs
                // nothing the snapshot does not hold; what follows it in its row cannot be
                // read. The cut is after the snapshot: cut at the damage, it would take the
                // snapshot with it.
                let (cut, detail) = if first_bad <= last {
                    (last + 1, format!("record {first_bad}, which the snapshot at {last} covers: {detail}"))
                } else {
                    (first_bad, detail)
                };
                out.truncated.push((tenant.clone(), cut, detail));
                let ticket = self.push(tenant, crate::writer::Write::Truncate { seq: cut })?;
                self.wait(ticket)?;
            }
        }
        Ok(out)
    }

    fn corrupt(&self, what: &'static str, tenant: &str, seq: u64, detail: &str) -> Error {
        Error::Corrupt {
            place: self.shared.place.clone(),
            what,
            tenant: tenant.into(),
            seq,
            detail: detail.into(),
        }
    }
}
