//! One event's delivery: signed POSTs with retries and backoff to the call's own URL or the
//! operator's, then to the failover URL.
//!
//! A URL an API client chose (the call's `webhook_url`) goes through a client of its own,
//! held to the destination policy (`webhook_destination`): its literal address is checked
//! before anything is sent, and a host name is resolved by a resolver that hands the
//! connection only the addresses it checked, so an answer that changes between check and
//! connect cannot slip through. That client uses no proxy (a proxy would resolve the name
//! itself). The operator's URLs are trusted. Neither client follows redirects: a 3xx is a
//! failed attempt.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::Semaphore;
use waitline::Event;

use crate::webhook::{Signer, WebhookConfig, WebhookStats, envelope};
use crate::webhook_destination::{DestinationPolicy, Refusal};

/// Sends events; shared by every lane.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The configured key, which each tenant's derives from.
    signer: Signer,
    config: WebhookConfig,
    /// For the operator's URLs.
    trusted: reqwest::Client,
    /// For URLs chosen by API clients: resolved through [`PolicedResolver`], no proxy.
    policed: reqwest::Client,
    pub(crate) stats: Arc<WebhookStats>,
}

/// How a delivery ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Every attempt at every URL failed, or no URL was allowed.
    Failed {
        /// Attempts made (requests sent or tried).
        attempts: u32,
        /// Why the last one failed.
        why: String,
    },
}

impl Delivery {
    /// # Panics
    /// If the HTTP clients cannot be made (no TLS roots).
    pub(crate) fn new(signer: Signer, config: WebhookConfig, stats: Arc<WebhookStats>) -> Self {
        let builder =
            || reqwest::Client::builder().timeout(config.timeout).redirect(reqwest::redirect::Policy::none());
        let trusted = builder().build().expect("HTTP client");
        let resolver = PolicedResolver { policy: Arc::new(config.allow.clone()) };
        let policed = builder().no_proxy().dns_resolver(Arc::new(resolver)).build().expect("HTTP client");
        Self { signer, config, trusted, policed, stats }
    }

    /// Whether `event` has somewhere to go: the call's own URL or the operator's.
    pub(crate) fn has_destination(&self, event: &Event) -> bool {
        event.kind.subject().is_some_and(|s| s.call.webhook_url.is_some()) || self.config.url.is_some()
    }

    /// The signer of `tenant`'s webhooks (for its lane to keep: deriving a key costs more
    /// than a signature).
    pub(crate) fn signer_of(&self, tenant: &str) -> Signer {
        self.signer.for_tenant(tenant)
    }

    /// Delivers `event`, holding one of `slots` for each request in flight (never while
    /// waiting to retry), so a lane's requests at once are bounded. To the call's own URL it
    /// is signed by `signer` (its tenant's: a URL a tenant chose only ever gets its own
    /// tenant's signatures); to the operator's URLs by the configured key, whatever the
    /// tenant, as the operator's receivers verify every tenant's events with one key.
    pub(crate) async fn deliver(&self, event: &Event, signer: &Signer, slots: &Semaphore) -> Outcome {
        let own = event.kind.subject().and_then(|s| s.call.webhook_url.as_deref());
        let primary = match (own, self.config.url.as_deref()) {
            (Some(url), _) => Some((url, true)),
            (None, Some(url)) => Some((url, false)),
            (None, None) => None,
        };
        let urls = primary.into_iter().chain(self.config.failover_url.as_deref().map(|url| (url, false)));
        let (mut attempt, mut why) = (0, "no webhook URL".to_owned());
        for (url, chosen_by_client) in urls {
            if chosen_by_client {
                if let Err(refusal) = self.config.allow.check_url(url) {
                    why = self.refused(event, url, &refusal);
                    continue;
                }
            }
            let client = if chosen_by_client { &self.policed } else { &self.trusted };
            let mut backoff = self.config.backoff;
            for try_no in 0..self.config.attempts.max(1) {
                if try_no > 0 {
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                attempt += 1;
                let sent = {
                    let _slot = slots.acquire().await;
                    let started = std::time::Instant::now();
                    let signer = if chosen_by_client { signer } else { &self.signer };
                    let sent = self.post(client, (url, signer), event, attempt).await;
                    self.stats.attempt_seconds.observe(started.elapsed().as_secs_f64());
                    sent
                };
                match sent {
                    Ok(()) => {
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                        return Outcome::Delivered;
                    }
                    Err(Failure::Refused(refusal)) => {
                        attempt -= 1; // nothing was sent
                        why = self.refused(event, url, &refusal);
                        break;
                    }
                    Err(Failure::Other { detail, reason }) => {
                        tracing::debug!(destination = %redacted(url), attempt, why = %detail, "webhook attempt failed");
                        let whose = if chosen_by_client {
                            "the call's webhook URL"
                        } else {
                            "the configured webhook URL"
                        };
                        why = format!("{whose}: {reason}");
                    }
                }
            }
        }
        Outcome::Failed { attempts: attempt, why }
    }

    /// Counts and logs a destination the policy refused; returns why.
    fn refused(&self, event: &Event, url: &str, refusal: &Refusal) -> String {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            tenant = %event.tenant,
            event = event.event_type(),
            id = %event.id,
            destination = %redacted(url),
            why = %refusal,
            "webhook destination not allowed: not sent there"
        );
        format!("destination not allowed: {refusal}")
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        (url, signer): (&str, &Signer),
        event: &Event,
        attempt: u32,
    ) -> Result<(), Failure> {
        let body = serde_json::to_vec(&envelope(event, attempt, url)).unwrap_or_default();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (timestamp, signature) = signer.sign(now.as_secs(), &body);
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("telnyx-timestamp", timestamp)
            .header("telnyx-signature-ed25519", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| match refusal_in(&e) {
                Some(refusal) => Failure::Refused(refusal.clone()),
                None => Failure::Other { detail: without_url(&e), reason: reason(&e) },
            })?;
        // Only a 2xx: a redirect (not followed) is a failed attempt too.
        if response.status().is_success() {
            Ok(())
        } else {
            let reason = format!("answered {}", response.status());
            Err(Failure::Other { detail: reason.clone(), reason })
        }
    }
}

/// Why an attempt failed.
#[derive(Debug)]
enum Failure {
    /// The resolver found no allowed address: nothing was sent.
    Refused(Refusal),
    /// A network error, a timeout, or an answer other than 2xx.
    Other {
        /// For the log (the URL redacted).
        detail: String,
        /// For the tenant's list of failures: no address, no URL (the configured URLs are
        /// the operator's, not the tenant's to see).
        reason: String,
    },
}

/// The policy's refusal inside a request error (the resolver's), if that is why it failed.
fn refusal_in(e: &reqwest::Error) -> Option<&Refusal> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        source = err.source();
    }
    None
}

/// What kind of failure a request error is, in words that name no address.
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the timeout".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

/// A request error without its URL (which may carry a token in its path or query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), &redacted(url.as_str()));
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        text = format!("{text}: {err}");
        source = err.source();
    }
    text
}

/// A URL as logs show it: scheme, host and port only (a path, query or user part may hold a
/// receiver's secret).
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/…", u.scheme(), u.host_str().unwrap_or(""))
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// Resolves a host name of a URL chosen by an API client, and gives the connection only the
/// addresses the policy allows (all of them for a name on the allow list).
#[derive(Debug)]
struct PolicedResolver {
    policy: Arc<DestinationPolicy>,
}

impl Resolve for PolicedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = policy.filter_resolved(&host, found.map(|a| a.ip()))?;
            Ok(addrs(allowed))
        })
    }
}

fn addrs(ips: Vec<IpAddr>) -> Addrs {
    Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_no_path_query_or_user() {
        assert_eq!(
            redacted("https://u:p@hooks.example.com:8443/t/s3cret?k=v"),
            "https://hooks.example.com:8443/…"
        );
        assert_eq!(redacted("http://[::1]/x"), "http://[::1]/…");
        assert_eq!(redacted("::"), "(not a URL)");
    }

    #[tokio::test]
    async fn the_resolver_hands_over_only_allowed_addresses() {
        let policed = PolicedResolver { policy: Arc::new(DestinationPolicy::default()) };
        let refused = policed.resolve("localhost".parse().unwrap()).await.err().expect("loopback only");
        assert_eq!(refused.downcast_ref::<Refusal>(), Some(&Refusal::Resolved("localhost".into())));
        let allowed = PolicedResolver { policy: Arc::new(DestinationPolicy::new(&["127.0.0.0/8"]).unwrap()) };
        let got: Vec<SocketAddr> = allowed.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(!got.is_empty() && got.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()), "{got:?}");
    }
}
