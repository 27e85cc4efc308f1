//! Hostile plugin `network-attempt` (design §11): with `{"addr": "127.0.0.1:PORT"}` it tries a TCP connect and a
//! UDP send to `addr`, and a DNS lookup of `host` (default `example.com`). Each refusal ⇒ an `info` diagnostic
//! (`network.tcp`, `network.udp`, `network.dns`) with the error, and the transform succeeds; anything that
//! worked ⇒ an `error` diagnostic and `rejected`.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginConfig, PluginInfo, Success, finish};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    addr: String,
    #[serde(default = "default_host")]
    host: String,
}

fn default_host() -> String {
    "example.com".into()
}

impl PluginConfig for Config {
    fn check(&self) -> Vec<Diagnostic> {
        match self.addr.parse::<SocketAddr>() {
            Ok(_) => Vec::new(),
            Err(e) => vec![Diagnostic::error(
                "config.invalid",
                format!("addr {:?}: {e}", self.addr),
            )],
        }
    }
}

const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,
"required":["addr"],"properties":{"addr":{"type":"string"},"host":{"type":"string"}}}"#;

fn report(code: &str, r: Result<String, String>) -> Diagnostic {
    match r {
        Ok(what) => Diagnostic::error(code, format!("NOT BLOCKED: {what}")),
        Err(e) => Diagnostic::info(code, format!("denied: {e}")),
    }
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: tries TCP, UDP and DNS.",
            Some(SCHEMA),
        )
    }

    fn validate_config(config: String) -> Vec<Diagnostic> {
        artgen_plugin_sdk::validate_config::<Config>(&config)
    }

    fn transform(config: String, _ctx: Context) -> Result<Success, Failure> {
        let (cfg, _) = artgen_plugin_sdk::load_config::<Config>(&config)?;
        let addr: SocketAddr = cfg.addr.parse().map_err(Failure::internal)?;
        let tcp = TcpStream::connect(addr)
            .map(|s| format!("connected to {:?}", s.peer_addr()))
            .map_err(|e| e.to_string());
        let udp = UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.send_to(b"artgen network-attempt", addr))
            .map(|n| format!("sent {n} bytes"))
            .map_err(|e| e.to_string());
        let dns = (cfg.host.as_str(), 80)
            .to_socket_addrs()
            .map(|it| format!("resolved {} address(es)", it.count()))
            .map_err(|e| e.to_string());
        finish(vec![
            report("network.tcp", tcp),
            report("network.udp", udp),
            report("network.dns", dns),
        ])
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
