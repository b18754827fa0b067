//! Who is on the other end of a client socket: TCP address for hba, OS user (SO_PEERCRED) for peer auth.

use crate::config::hba::Peer;
use crate::server::stream::Stream;

/// hba connection kind/address and, on the unix socket, the peer's uid.
pub fn identify(stream: &Stream) -> (Peer, Option<u32>) {
    match stream {
        Stream::Tcp(s) => {
            let addr = s
                .peer_addr()
                .map(|a| a.ip())
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            (Peer::Tcp { addr, tls: false }, None)
        }
        Stream::Unix(s) => (Peer::Unix, s.peer_cred().ok().map(|c| c.uid())),
        // identify() runs on the accepted socket; TLS is set up later (see client::tls_upgrade)
        Stream::Tls(_) => (
            Peer::Tcp {
                addr: std::net::IpAddr::from([0, 0, 0, 0]),
                tls: true,
            },
            None,
        ),
    }
}

/// The login name of a uid (getpwuid_r), without glibc NSS surprises: None if unknown.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buffers are valid for the sizes given; result is checked before use.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_uid_zero() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
    }
}
