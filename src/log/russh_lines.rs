//! russh's debug lines, reworded into the ones `sshd -d` prints for the same
//! events: the algorithms a key exchange chose, each authentication request and its
//! failure, and channel requests. Everything else russh says at debug level is
//! dropped: much of it is per packet, and some of it prints keys in `Debug` form.
//!
//! The input is russh 0.65's wording; a line that no longer parses comes out as
//! it is rather than being lost (see the tests, which pin the wording).

/// The `-d` lines for one russh debug message; empty to drop it.
pub(super) fn rewrite(msg: &str) -> Vec<String> {
    if let Some(names) = msg.strip_prefix("negotiated: ") {
        return kex_lines(names);
    }
    if let Some(rest) = msg.strip_prefix("name: ") {
        // `name: "user" "ssh-connection" "publickey"`
        let words: Vec<&str> = rest.split('"').skip(1).step_by(2).collect();
        if let [user, service, method] = words[..] {
            return vec![format!(
                "userauth-request for user {user} service {service} method {method}"
            )];
        }
        return vec![msg.to_string()];
    }
    if let Some(request) = msg.strip_prefix("rejecting ") {
        return vec![auth_failure(request)];
    }
    if msg == "new keys received" {
        return vec!["SSH2_MSG_NEWKEYS received".into()];
    }
    if msg == "strict kex enabled" {
        return vec!["kex: strict KEX mode enabled".into()];
    }
    if let Some(rest) = msg.strip_prefix("handler.") {
        return channel_line(rest).into_iter().collect();
    }
    Vec::new()
}

/// `Names { kex: Name("..."), key: Ed25519, cipher: Name("..."), ... }` as sshd's
/// four `kex:` lines.
fn kex_lines(names: &str) -> Vec<String> {
    let fields = struct_fields(names);
    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let (Some(kex), Some(key), Some(cipher), Some(cmac), Some(smac)) = (
        get("kex"),
        get("key"),
        get("cipher"),
        get("client_mac"),
        get("server_mac"),
    ) else {
        return vec![format!("kex: negotiated {names}")];
    };
    let cipher = quoted(cipher);
    // An AEAD cipher carries its own integrity check, which sshd shows this way.
    let aead = cipher.contains("gcm") || cipher.contains("poly1305");
    let mac = |m: &str| {
        if aead {
            "<implicit>".to_string()
        } else {
            quoted(m).to_string()
        }
    };
    let comp = |c: Option<&str>| match c {
        Some("Zlib") => "zlib",
        Some("ZlibOpenSSH") => "zlib@openssh.com",
        _ => "none",
    };
    vec![
        format!("kex: algorithm: {}", quoted(kex)),
        format!("kex: host key algorithm: {}", host_key_name(key)),
        format!(
            "kex: client->server cipher: {cipher} MAC: {} compression: {}",
            mac(cmac),
            comp(get("client_compression"))
        ),
        format!(
            "kex: server->client cipher: {cipher} MAC: {} compression: {}",
            mac(smac),
            comp(get("server_compression"))
        ),
    ]
}

/// The top-level `name: value` pairs of a derived `Debug` struct.
fn struct_fields(s: &str) -> Vec<(&str, &str)> {
    let Some(body) = s
        .find('{')
        .and_then(|i| s.rfind('}').map(|j| (i, j)))
        .and_then(|(i, j)| s.get(i + 1..j))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in body.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' | '{' | '[' if !quoted => depth += 1,
            ')' | '}' | ']' if !quoted => depth -= 1,
            ',' if depth == 0 && !quoted => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&body[start..]);
    out.into_iter()
        .filter_map(|f| f.split_once(": ").map(|(k, v)| (k.trim(), v.trim())))
        .collect()
}

/// `Name("x")` -> `x`.
fn quoted(v: &str) -> &str {
    v.split('"').nth(1).unwrap_or(v)
}

/// ssh-key's `Debug` of an algorithm -> its SSH name.
fn host_key_name(debug: &str) -> String {
    let name = match debug {
        "Ed25519" => "ssh-ed25519",
        "Rsa { hash: Some(Sha512) }" => "rsa-sha2-512",
        "Rsa { hash: Some(Sha256) }" => "rsa-sha2-256",
        "Rsa { hash: None }" => "ssh-rsa",
        "Ecdsa { curve: NistP256 }" => "ecdsa-sha2-nistp256",
        "Ecdsa { curve: NistP384 }" => "ecdsa-sha2-nistp384",
        "Ecdsa { curve: NistP521 }" => "ecdsa-sha2-nistp521",
        other => other,
    };
    name.to_string()
}

/// `AuthRequest { .., methods: MethodSet([PublicKey, Password]), .., rejection_count: 2 }`
/// -> which attempt failed and what the client may still try (sshd's failure reply).
fn auth_failure(request: &str) -> String {
    let fields = struct_fields(request);
    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let methods: Vec<&str> = get("methods")
        .and_then(|m| m.split_once('[').and_then(|(_, r)| r.split_once(']')))
        .map(|(inner, _)| {
            inner
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| match m {
                    "PublicKey" => "publickey",
                    "Password" => "password",
                    "KeyboardInteractive" => "keyboard-interactive",
                    "HostBased" => "hostbased",
                    "None" => "none",
                    other => other,
                })
                .collect()
        })
        .unwrap_or_default();
    let failures = get("rejection_count").unwrap_or("?");
    let partial = get("partial_success") == Some("true");
    format!(
        "userauth: request failed (failures {failures}{}); methods that can continue: {}",
        if partial { ", partial success" } else { "" },
        if methods.is_empty() {
            "none".to_string()
        } else {
            methods.join(",")
        }
    )
}

/// `exec_request ChannelId(0)` -> `server_input_channel_req: channel 0 request exec`.
fn channel_line(rest: &str) -> Option<String> {
    let (what, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let channel = args
        .strip_prefix("ChannelId(")
        .and_then(|a| a.split(')').next())
        .unwrap_or("?");
    let request = match what {
        "pty_request" => "pty-req",
        "x11_request" => "x11-req",
        "env_request" => "env",
        "shell_request" => "shell",
        "agent_request" => "auth-agent-req@openssh.com",
        "exec_request" => "exec",
        "subsystem_request" => "subsystem",
        "window_change" => "window-change",
        "signal" => "signal",
        "channel_eof" => return Some(format!("channel {channel}: rcvd eof")),
        "channel_close" => return Some(format!("channel {channel}: rcvd close")),
        "tcpip_forward" => {
            return Some(format!(
                "server_input_global_request: rtype tcpip-forward {args}"
            ));
        }
        "cancel_tcpip_forward" => {
            return Some(format!(
                "server_input_global_request: rtype cancel-tcpip-forward {args}"
            ));
        }
        _ => return None,
    };
    Some(format!(
        "server_input_channel_req: channel {channel} request {request}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kex_choice_reads_like_sshd() {
        let msg = r#"negotiated: Names { kex: Name("curve25519-sha256"), key: Ed25519, cipher: Name("chacha20-poly1305@openssh.com"), client_mac: Name("none"), server_mac: Name("none"), server_compression: None, client_compression: None, ignore_guessed: false, guessed_ignored: false, host_key_is_certificate: false, strict_kex: true }"#;
        assert_eq!(
            rewrite(msg),
            vec![
                "kex: algorithm: curve25519-sha256",
                "kex: host key algorithm: ssh-ed25519",
                "kex: client->server cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none",
                "kex: server->client cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none",
            ]
        );
        let ctr = r#"negotiated: Names { kex: Name("ecdh-sha2-nistp256"), key: Rsa { hash: Some(Sha512) }, cipher: Name("aes128-ctr"), client_mac: Name("hmac-sha2-256-etm@openssh.com"), server_mac: Name("hmac-sha2-256-etm@openssh.com"), server_compression: None, client_compression: None, ignore_guessed: false, guessed_ignored: false, host_key_is_certificate: false, strict_kex: false }"#;
        let lines = rewrite(ctr);
        assert_eq!(lines[1], "kex: host key algorithm: rsa-sha2-512");
        assert_eq!(
            lines[2],
            "kex: client->server cipher: aes128-ctr MAC: hmac-sha2-256-etm@openssh.com compression: none"
        );
    }

    #[test]
    fn auth_requests_and_failures() {
        assert_eq!(
            rewrite(r#"name: "alice" "ssh-connection" "publickey""#),
            vec!["userauth-request for user alice service ssh-connection method publickey"]
        );
        let rejected = "rejecting AuthRequest { initial_methods: MethodSet([PublicKey, Password]), methods: MethodSet([PublicKey, Password]), partial_success: false, current: Some(PublicKey { key: [0, 0, 0, 11], algo: [115], sent_pk_ok: false }), principal: None, rejection_count: 2 }";
        assert_eq!(
            rewrite(rejected),
            vec![
                "userauth: request failed (failures 2); methods that can continue: publickey,password"
            ]
        );
    }

    #[test]
    fn channel_requests_and_noise() {
        assert_eq!(
            rewrite("handler.exec_request ChannelId(0)"),
            vec!["server_input_channel_req: channel 0 request exec"]
        );
        assert_eq!(
            rewrite("handler.pty_request ChannelId(3)"),
            vec!["server_input_channel_req: channel 3 request pty-req"]
        );
        assert_eq!(rewrite("> msg type 94, len 40"), Vec::<String>::new());
        assert_eq!(
            rewrite("signing with key PrivateKey { .. }"),
            Vec::<String>::new()
        );
    }
}
