//! The machine's listening TCP sockets and the uids owning them, asked of
//! the kernel through `sock_diag` netlink (`NETLINK_SOCK_DIAG`) for the
//! LISTEN state only.
//!
//! Why not `/proc/net/tcp`: reading it walks every bucket of the kernel's
//! table of established connections, listening or not, which is sized by
//! the machine's memory (262,144 buckets on a 24 GiB machine: 5.7 ms a
//! read, on the thread that reads it). A dump asked for LISTEN sockets
//! alone walks only the listening table. The caller falls back to the
//! `/proc` tables where netlink is refused (a seccomp filter, say).

use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

/// One listening TCP socket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Listener {
    /// The address it listens on (a wildcard for all).
    pub(crate) addr: IpAddr,
    pub(crate) port: u16,
    /// The uid owning it.
    pub(crate) uid: u32,
}

/// Every listening TCP socket of this network namespace, IPv4 and IPv6;
/// `None` when netlink cannot be asked or answers out of form.
pub(crate) fn tcp_listeners() -> Option<Vec<Listener>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).ok()?;
    socket.bind_auto().ok()?;
    socket.connect(&SocketAddr::new(0, 0)).ok()?;
    let mut listeners = Vec::new();
    for family in [AF_INET, AF_INET6] {
        dump(&mut socket, family, &mut listeners)?;
    }
    Some(listeners)
}

/// Asks for the LISTEN sockets of `family` and collects the answer.
fn dump(socket: &mut Socket, family: u8, into: &mut Vec<Listener>) -> Option<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = match family {
        AF_INET => SocketId::new_v4(),
        _ => SocketId::new_v6(),
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0).ok()?;
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0).ok()?;
        let mut offset = 0;
        while offset < size {
            let message =
                NetlinkMessage::<SockDiagMessage>::deserialize(&buffer[offset..size]).ok()?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let header = response.header;
                    into.push(Listener {
                        addr: header.socket_id.source_address,
                        port: header.socket_id.source_port,
                        uid: header.uid,
                    });
                }
                NetlinkPayload::Done(_) => return Some(()),
                NetlinkPayload::Error(_) => return None,
                _ => {}
            }
            if length == 0 {
                return None;
            }
            offset += length;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket this test listens on is listed, with its port and our uid;
    /// one of another family too.
    #[test]
    fn a_listening_socket_is_found_with_its_owner() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let uid = nix::unistd::geteuid().as_raw();
        let connected = std::net::TcpStream::connect(("127.0.0.1", v4_port)).unwrap();
        let client_port = connected.local_addr().unwrap().port();
        // Linux answers sock_diag to any user; /proc is only the fallback.
        let listeners = tcp_listeners().expect("the kernel answers a sock_diag dump");
        let found = |port: u16, addr: IpAddr| {
            listeners
                .iter()
                .any(|l| l.port == port && l.addr == addr && l.uid == uid)
        };
        assert!(
            found(v4_port, "127.0.0.1".parse().unwrap()),
            "{listeners:?}"
        );
        if let Some(v6) = v6 {
            let port = v6.local_addr().unwrap().port();
            assert!(found(port, "::1".parse().unwrap()), "{listeners:?}");
        }
        assert!(
            !listeners.iter().any(|l| l.port == client_port),
            "only listening sockets"
        );
    }
}
