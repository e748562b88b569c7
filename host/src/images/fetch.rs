//! Fetching images named by URL: shared HTTP clients for the process (direct, and through the
//! proxy the environment names), a bound on downloads in flight, a size limit, bounded
//! redirects, and (unless allowed) refusal of addresses inside the server's own network,
//! checked on every hop, directly or through a proxy, so that neither a hostname, a proxy nor
//! a redirect can lead there.

use super::ImageError;
use crate::config::ImageSettings;
use hyper_util::client::proxy::matcher::Matcher;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Why an address was refused; found again in the error chain of a failed request.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for Refused {}

fn v4_is_internal(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn v6_is_internal(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_is_internal(v4);
    }
    let s = ip.segments();
    // IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks to the IPv4
    // address) and 6to4 (2002:a.b.c.d::) forms carry an IPv4 address: judge that address.
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return v4_is_internal(Ipv4Addr::new(a, b, c, d));
    }
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return v4_is_internal(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 of an IPv4 address
}

/// Whether `ip` lies in a loopback, private, link-local or otherwise non-public range.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_internal(v4),
        IpAddr::V6(v6) => v6_is_internal(v6),
    }
}

fn refusal(host: &str, ip: IpAddr) -> Refused {
    Refused(format!(
        "{host} resolves to {ip}, an internal (loopback, private or link-local) address; \
         set IMAGE_ALLOW_PRIVATE_URLS=true to allow such URLs"
    ))
}

/// DNS resolution that drops internal addresses, refusing a host that has only those.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            match (public.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(public.into_iter()) as Addrs),
                (true, Some(first)) => Err(Box::new(refusal(&host, first.ip())) as _),
                (true, None) => Err(format!("{host} has no addresses").into()),
            }
        })
    }
}

/// A URL's host when it is an IP literal (which skips DNS resolution).
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// The process-wide image downloader.
///
/// URLs that the proxy variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, the
/// same rules as curl) send through a proxy go out on `proxied`; the others on `direct`, which
/// never uses a proxy. A direct connection refuses internal addresses where it resolves names
/// (so DNS cannot change its answer between check and connection); through a proxy, which
/// resolves names itself, each name is resolved here first and refused if any of its
/// addresses is internal (a name that does not resolve here is left to the proxy's policy).
/// Redirects are followed here, one hop at a time, so every hop is checked and routed anew.
pub struct Fetcher {
    direct: reqwest::Client,
    proxied: reqwest::Client,
    proxies: Matcher,
    slots: Semaphore,
    settings: ImageSettings,
}

/// A hop's request went wrong.
fn failed(url: &str, e: &reqwest::Error) -> ImageError {
    ImageError(format!("cannot download {url}: {}", explain(e)))
}

impl Fetcher {
    /// Builds the shared clients from the `HTTP_CLIENT_*` and `IMAGE_*` settings and the
    /// proxy variables.
    pub fn new(settings: &ImageSettings) -> Result<Fetcher, String> {
        let builder = || {
            reqwest::Client::builder()
                .user_agent(settings.user_agent.clone())
                .timeout(settings.timeout)
                .connect_timeout(settings.timeout)
                .pool_max_idle_per_host(settings.max_keepalive)
                .redirect(reqwest::redirect::Policy::none())
        };
        let mut direct = builder().no_proxy();
        if !settings.allow_private {
            direct = direct.dns_resolver(Arc::new(PublicOnly));
        }
        let build = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| format!("cannot build the image HTTP client: {e}"))
        };
        Ok(Fetcher {
            direct: build(direct)?,
            // reqwest reads the same variables with the same matcher.
            proxied: build(builder())?,
            proxies: Matcher::from_env(),
            slots: Semaphore::new(settings.max_connections),
            settings: settings.clone(),
        })
    }

    /// Passes inline image bytes within the size limit that downloads have.
    pub fn check_size(&self, bytes: Vec<u8>) -> Result<Vec<u8>, ImageError> {
        let limit = self.settings.max_bytes;
        if bytes.len() > limit {
            return Err(ImageError(format!(
                "image is larger than {limit} bytes (IMAGE_MAX_BYTES): {} bytes",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Whether `url` goes through a proxy.
    fn is_proxied(&self, url: &reqwest::Url) -> bool {
        url.as_str()
            .parse::<axum::http::Uri>()
            .is_ok_and(|uri| self.proxies.intercept(&uri).is_some())
    }

    /// Refuses a hop that leads inside the network: a literal internal address always, and
    /// through a proxy a name that resolves here to an internal address.
    async fn admit(&self, url: &reqwest::Url, proxied: bool) -> Result<(), Refused> {
        if self.settings.allow_private {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        if let Some(ip) = literal_ip(url) {
            return match is_internal(ip) {
                true => Err(refusal(host, ip)),
                false => Ok(()),
            };
        }
        if !proxied {
            // The direct client's resolver checks the addresses it connects to.
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        match tokio::net::lookup_host((host, port)).await {
            Ok(addrs) => match addrs.map(|a| a.ip()).find(|ip| is_internal(*ip)) {
                Some(ip) => Err(refusal(host, ip)),
                None => Ok(()),
            },
            Err(e) => {
                tracing::debug!(host, error = %e, "name does not resolve here; the proxy decides");
                Ok(())
            }
        }
    }

    /// Downloads the image at `url` within the size limit, holding one of the calling
    /// request's download slots (`request`) and one of the process's.
    pub async fn get(&self, url: &str, request: &Semaphore) -> Result<Vec<u8>, ImageError> {
        let mut hop = reqwest::Url::parse(url)
            .map_err(|e| ImageError(format!("invalid URL '{url}': {e}")))?;
        let refused = |r: Refused| ImageError(format!("cannot download {url}: {r}"));
        let mut proxied = self.is_proxied(&hop);
        self.admit(&hop, proxied).await.map_err(refused)?;
        let closed = |_| ImageError("the image downloader is shutting down".into());
        // The request's own slot first, so that one request never holds more than its share
        // of the process's slots, however many URLs it sends.
        let _mine = request.acquire().await.map_err(closed)?;
        let _slot = self.slots.acquire().await.map_err(closed)?;
        let max_redirects = self.settings.max_redirects;
        let mut redirects = 0;
        let mut response = loop {
            if redirects > 0 {
                proxied = self.is_proxied(&hop);
                self.admit(&hop, proxied).await.map_err(refused)?;
            }
            let client = if proxied { &self.proxied } else { &self.direct };
            let response = client
                .get(hop.clone())
                .send()
                .await
                .map_err(|e| failed(url, &e))?;
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            let Some(location) = location.filter(|_| response.status().is_redirection()) else {
                break response;
            };
            redirects += 1;
            if redirects > max_redirects {
                return Err(refused(Refused(format!(
                    "more than {max_redirects} redirects (IMAGE_MAX_REDIRECTS)"
                ))));
            }
            hop = hop.join(location).map_err(|e| {
                ImageError(format!(
                    "cannot download {url}: invalid redirect to '{location}': {e}"
                ))
            })?;
            if !matches!(hop.scheme(), "http" | "https") {
                return Err(refused(Refused(format!(
                    "redirect to a {} URL is not followed",
                    hop.scheme()
                ))));
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(ImageError(format!(
                "cannot download {url}: the server answered HTTP {status}"
            )));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("text/") || content_type.contains("json") {
            return Err(ImageError(format!(
                "{url} is not an image: the server sent {content_type}"
            )));
        }
        let limit = self.settings.max_bytes;
        let too_big = || {
            ImageError(format!(
                "{url} is larger than {limit} bytes (IMAGE_MAX_BYTES)"
            ))
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(url, &e))? {
            if body.len() + chunk.len() > limit {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The most telling reason in a request error's chain.
fn explain(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return r.to_string();
        }
        innermost = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        return "timed out (HTTP_CLIENT_TIMEOUT)".into();
    }
    innermost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::169.254.169.254",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "172.32.0.1",
            "::8.8.8.8",
            "2002:808:808::",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
