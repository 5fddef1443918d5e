//! Key custody checks shared by secret lookups and callbacks: which
//! addresses no request of sandboxd's may go to, whether a request would
//! carry the session key (decoded, split or spread over headers), and
//! whether the agent-server's port is really held by the agent-server.

use crate::netdiag::Listener;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

/// Host names of cloud metadata services (compared without a trailing dot,
/// case-insensitively).
const METADATA_HOSTS: [&str; 3] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
];

/// Why `url`'s host is never a destination of a secret lookup or a
/// callback: link-local addresses (169.254.0.0/16, fe80::/10) and cloud
/// metadata services (169.254.169.254, fd00:ec2::254,
/// metadata.google.internal). `None` when it may be used. Literal
/// addresses and the known names are checked here; the lookups' and
/// callbacks' own DNS resolution is not pinned (a name that resolves to a
/// link-local address is not caught).
pub fn refused_host(url: &Url) -> Option<&'static str> {
    match url.host()? {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            METADATA_HOSTS
                .contains(&name.as_str())
                .then_some("a cloud metadata service")
        }
        url::Host::Ipv4(ip) => refused_ip(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => refused_ip(IpAddr::V6(ip)),
    }
}

/// Why an address is refused (see [`refused_host`]).
pub fn refused_ip(ip: IpAddr) -> Option<&'static str> {
    const AWS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4 == Ipv4Addr::new(169, 254, 169, 254) => {
            Some("a cloud metadata service")
        }
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if v6 == AWS_V6 => Some("a cloud metadata service"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("a link-local address"),
        _ => None,
    }
}

/// Shortest piece of the key that counts when the key is spread over
/// several texts: shorter pieces occur by chance in ordinary values.
pub const MIN_PIECE: usize = 4;

/// Whether `texts` together carry `key`: it is in one of them, or it can
/// be put together from pieces of at least [`MIN_PIECE`] bytes found in
/// them (a key split across two headers, or across the URL and a header).
/// Compared case-insensitively (a URL's host is lowercased). A caller who
/// cuts the key into pieces shorter than that is not stopped; such a
/// caller holds the key already and could send it anywhere itself: the
/// check keeps sandboxd from being the one that carries it.
pub fn carries_key<'a>(key: &str, texts: impl IntoIterator<Item = &'a str>) -> bool {
    if key.is_empty() {
        return false;
    }
    let key = key.to_ascii_lowercase();
    let texts: Vec<String> = texts.into_iter().map(str::to_ascii_lowercase).collect();
    let key = key.as_bytes();
    let contains = |piece: &[u8]| {
        texts
            .iter()
            .any(|text| text.as_bytes().windows(piece.len()).any(|w| w == piece))
    };
    // The longest piece found at each position, then whether those
    // pieces (overlapping or end to end) cover the whole key.
    let piece = MIN_PIECE.min(key.len());
    let mut reach = 0;
    for start in 0..=key.len() - piece {
        if start > reach {
            return false;
        }
        // Found pieces are closed under shortening: binary search.
        let (mut found, mut beyond) = (piece - 1, key.len() - start + 1);
        while found + 1 < beyond {
            let len = (found + beyond) / 2;
            if contains(&key[start..start + len]) {
                found = len;
            } else {
                beyond = len;
            }
        }
        if found >= piece {
            reach = reach.max(start + found);
        }
        if reach == key.len() {
            return true;
        }
    }
    false
}

/// `text` percent-decoded until nothing changes (at most a few rounds: a
/// double-encoded `%2541` is decoded twice), so a key hidden as `%41...`
/// in a path or query is seen. Invalid sequences stay as they are.
pub fn percent_decoded(text: &str) -> String {
    let mut current = text.to_owned();
    for _ in 0..4 {
        let decoded = decode_once(&current);
        if decoded == current {
            break;
        }
        current = decoded;
    }
    current
}

fn decode_once(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[at + 1]), hex(bytes[at + 2])) {
                out.push((hi * 16 + lo) as u8);
                at += 3;
                continue;
            }
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every text of a URL a server may read a key from: the URL as sent and
/// percent-decoded (path, query, fragment, user info).
pub fn url_texts(url: &Url) -> [String; 2] {
    [url.as_str().to_owned(), percent_decoded(url.as_str())]
}

/// Uids owning a TCP socket in LISTEN state on `port` that a connection
/// to `host` may reach (a wildcard or the same address), asked of the
/// kernel (`netdiag`), else read from `/proc/net/tcp` and
/// `/proc/net/tcp6`. Empty when nothing listens (or neither answers).
pub fn listener_uids(host: IpAddr, port: u16) -> Vec<u32> {
    let listeners = crate::netdiag::tcp_listeners().unwrap_or_else(proc_listeners);
    let mut uids: Vec<u32> = listeners
        .into_iter()
        .filter(|l| l.port == port && reaches(l.addr, host))
        .map(|l| l.uid)
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// The uids listening on the port of `url` when its host is loopback
/// (`localhost`: both families); `None` for any other host, where the
/// port's owner cannot be told.
pub fn loopback_port_holders(url: &Url) -> Option<Vec<u32>> {
    let port = url.port_or_known_default()?;
    let hosts: Vec<IpAddr> = match url.host()? {
        url::Host::Ipv4(ip) => vec![ip.into()],
        url::Host::Ipv6(ip) => vec![ip.into()],
        url::Host::Domain("localhost") => vec![
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ],
        url::Host::Domain(_) => return None,
    };
    if !hosts.iter().all(IpAddr::is_loopback) {
        return None;
    }
    let mut uids: Vec<u32> = hosts
        .iter()
        .flat_map(|ip| listener_uids(*ip, port))
        .collect();
    uids.sort_unstable();
    uids.dedup();
    Some(uids)
}

/// The listening sockets of `/proc/net/tcp` and `/proc/net/tcp6`.
fn proc_listeners() -> Vec<Listener> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| parse_listeners(&text))
        .collect()
}

/// The LISTEN (state `0A`) rows of a /proc/net/tcp or tcp6 table.
fn parse_listeners(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") {
                return None;
            }
            let (addr, port) = fields.get(1)?.split_once(':')?;
            Some(Listener {
                addr: parse_proc_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                uid: fields.get(7)?.parse().ok()?,
            })
        })
        .collect()
}

/// An address as /proc/net/tcp{,6} writes it: 32-bit words in host order,
/// in hex.
fn parse_proc_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Whether a connection to `host` may land on a socket bound to `bound`.
fn reaches(bound: IpAddr, host: IpAddr) -> bool {
    let unmapped = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (bound, host) = (unmapped(bound), unmapped(host));
    bound.is_unspecified() || bound == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_link_local_and_metadata_hosts() {
        let refused = [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.2:8080/x",
            "http://[fe80::1]/x",
            "http://[febf::1]/x",
            "http://[fd00:ec2::254]/x",
            "http://[::ffff:169.254.169.254]/x",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./x",
        ];
        for url in refused {
            assert!(refused_host(&Url::parse(url).unwrap()).is_some(), "{url}");
        }
        let allowed = [
            "http://127.0.0.1:8000/x",
            "https://app.all-hands.dev/api",
            "http://[::1]/x",
            "http://[fec0::1]/x",
            "http://169.253.1.1/x",
            "http://metadata.example/x",
        ];
        for url in allowed {
            assert!(refused_host(&Url::parse(url).unwrap()).is_none(), "{url}");
        }
    }

    #[test]
    fn finds_the_key_however_it_is_spread() {
        let key = "the-daemon-key-0123";
        let carried: [&[&str]; 6] = [
            &["Bearer the-daemon-key-0123"],
            &["THE-DAEMON-KEY-0123"],
            &["the-daemon", "-key-0123"],
            &["x-the-daem", "on-key-", "0123-y"],
            &["ab", "the-daemon-key-0123"],
            &["key-0123", "the-daemon-"],
        ];
        for texts in carried {
            assert!(carries_key(key, texts.iter().copied()), "{texts:?}");
        }
        let clean: [&[&str]; 4] = [
            &["the-daemon-key-012"],
            &["Bearer their-own-token", "text/plain"],
            &[],
            &["the-daemon-k", "e", "y-0123"],
        ];
        for texts in clean {
            assert!(!carries_key(key, texts.iter().copied()), "{texts:?}");
        }
        assert!(!carries_key("", ["anything"]));
    }

    #[test]
    fn decodes_percent_encoding_repeatedly() {
        assert_eq!(percent_decoded("/a%2Fb%41"), "/a/bA");
        assert_eq!(percent_decoded("/%2541"), "/A");
        assert_eq!(percent_decoded("%zz%4"), "%zz%4");
        let url = Url::parse("http://evil.test/%74%68%65-daemon-key?q=%2574").unwrap();
        assert!(url_texts(&url)[1].contains("/the-daemon-key"));
    }

    #[test]
    fn parses_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:EA60 00000000:0000 0A 00000000:00000000 00:00000000 00000000    65534        0 1 1 0 100 0 0 10 0\n\
           1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
           2: 0100007F:EA60 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        let listeners = parse_listeners(v4);
        assert_eq!(
            listeners,
            [
                Listener {
                    addr: "127.0.0.1".parse().unwrap(),
                    port: 60000,
                    uid: 65534
                },
                Listener {
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 8080,
                    uid: 0
                },
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st\n\
           0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1\n";
        let listeners = parse_listeners(v6);
        assert_eq!(listeners[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(listeners[0].uid, 1000);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(reaches("0.0.0.0".parse().unwrap(), loopback));
        assert!(reaches("::".parse().unwrap(), loopback));
        assert!(reaches("::ffff:127.0.0.1".parse().unwrap(), loopback));
        assert!(!reaches("127.0.0.2".parse().unwrap(), loopback));
    }

    /// A socket we listen on is found with our own uid.
    #[test]
    fn finds_our_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let uids = listener_uids("127.0.0.1".parse().unwrap(), port);
        assert_eq!(uids, [nix::unistd::geteuid().as_raw()]);
    }
}
