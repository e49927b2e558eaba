//! `/v1/tunnel`: this host's key, its peers, and the names exchanged with them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Control;
use crate::announce;
use crate::api::{ApiError, ErrorCode, Peer, PeerAdd, TunnelKey};
use crate::control::model::{b64, internal, parse_key, tunnel_off, Model};

impl Control {
    pub async fn tunnel_key(&self) -> Result<TunnelKey, ApiError> {
        let listen = self.opts.tunnel_listen.ok_or_else(tunnel_off)?;
        let key = self.dp.call(|e| e.tunnel_public_key()).await.map_err(internal)?.ok_or_else(tunnel_off)?;
        let (addr, drops) = self.dp.call(|e| (e.tunnel_addr(), e.tunnel_drops())).await.map_err(internal)?;
        let drops = drops.map(|d| d.iter().map(|(r, n)| (r.as_str().to_string(), n)).collect()).unwrap_or_default();
        Ok(TunnelKey { public_key: b64(&key), listen: addr.unwrap_or(listen).to_string(), drops })
    }

    /// A new key pair for this host; refused while peers are set (they know the old key).
    pub async fn new_tunnel_key(&self) -> Result<TunnelKey, ApiError> {
        let m = self.model.lock().await;
        m.check_rekey()?;
        let private = random_bytes::<32>();
        write_key(&self.opts.state_dir, &private).map_err(internal)?;
        let seed = random_bytes::<32>();
        self.dp.call(move |e| e.rekey_tunnel(private, seed)).await.map_err(internal)?.map_err(internal)?;
        drop(m);
        self.tunnel_key().await
    }

    pub async fn add_peer(&self, req: PeerAdd) -> Result<Peer, ApiError> {
        let mut m = self.model.lock().await;
        let key = self.add_peer_locked(&mut m, &req).await?;
        self.save(&m)?;
        self.announce(&mut m);
        drop(m);
        self.peers().await?.into_iter().find(|p| p.public_key == key).ok_or_else(|| internal("peer vanished"))
    }

    /// Takes a peer in and gives it to the tunnel; returns its canonical key.
    pub(super) async fn add_peer_locked(&self, m: &mut Model, req: &PeerAdd) -> Result<String, ApiError> {
        let plan = m.add_peer(req)?;
        let (key, endpoint, nets) = (plan.key, plan.endpoint, plan.networks.clone());
        let added = self.dp.call(move |e| e.add_peer(key, endpoint, &nets)).await.map_err(internal);
        if let Err(e) = added.and_then(|r| r.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("peer refused: {e}")))) {
            m.remove_peer(&plan.canonical);
            return Err(e);
        }
        tracing::info!(peer = %plan.canonical, endpoint = ?endpoint, networks = ?req.networks, "tunnel peer added");
        Ok(plan.canonical)
    }

    pub async fn remove_peer(&self, key: &str) -> Result<(), ApiError> {
        let mut m = self.model.lock().await;
        let (key, canonical) = m.peer_key(key)?;
        self.dp.call(move |e| e.remove_peer(key)).await.map_err(internal)?.map_err(internal)?;
        m.remove_peer(&canonical);
        self.save(&m)?;
        self.push_dns(&m);
        Ok(())
    }

    pub async fn peers(&self) -> Result<Vec<Peer>, ApiError> {
        let m = self.model.lock().await;
        let (infos, now) = self.dp.call(|e| (e.peer_infos(), e.now())).await.map_err(internal)?;
        Ok(m.peers()
            .into_iter()
            .map(|p| {
                let info = infos.iter().find(|i| b64(&i.public_key) == p.public_key);
                Peer {
                    endpoint: info.and_then(|i| i.endpoint).or(p.endpoint).map(|e| e.to_string()),
                    public_key: p.public_key,
                    networks: p.networks,
                    last_handshake_secs: info.and_then(|i| i.last_handshake).map(|t| now.saturating_sub(t).as_secs()),
                    handshakes: info.map_or(0, |i| i.handshakes),
                    rx_packets: info.map_or(0, |i| i.rx_packets),
                    rx_bytes: info.map_or(0, |i| i.rx_bytes),
                    tx_packets: info.map_or(0, |i| i.tx_packets),
                    tx_bytes: info.map_or(0, |i| i.tx_bytes),
                    drops: info.map(|i| i.drops.iter().map(|(r, n)| (r.as_str().to_string(), n)).collect()).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Starts the tasks that exchange names with peers: one takes announcements from the
    /// datapath, one re-announces every [`announce::EVERY`]. Call once, in the runtime.
    pub fn start_background(self: &Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let _ = self.dp.submit_fn(move |e| e.set_announce_sink(tx));
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((key, tag, frame)) = rx.recv().await {
                me.receive_announcement(key, tag, &frame).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(announce::EVERY);
            loop {
                tick.tick().await;
                let mut m = me.model.lock().await;
                me.announce(&mut m);
            }
        });
    }

    /// Takes one announcement chunk from a peer into the model; DNS follows when names changed.
    async fn receive_announcement(&self, key: [u8; 32], tag: u32, frame: &[u8]) {
        let chunk = match announce::parse(frame) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "announcement dropped");
                return;
            }
        };
        let mut m = self.model.lock().await;
        match m.receive_announcement(&key, tag, chunk) {
            Ok(true) => self.push_dns(&m),
            Ok(false) => {}
            Err(why) => tracing::debug!(%why, "announcement refused"),
        }
    }
}

/// Bytes from the kernel's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b
}

/// The tunnel's private key file: `STATE_DIR/tunnel.key`, base64, mode 0600.
fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("tunnel.key")
}

/// Reads the private key, making one (0600) at the first start.
///
/// # Errors
/// An unreadable or malformed key file (never overwritten), or a write failure.
pub fn load_or_make_key(state_dir: &Path) -> Result<[u8; 32], String> {
    let path = key_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_key(text.trim())
            .map_err(|_| format!("{} does not hold a base64 32-byte key; move it aside to make a new one", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes::<32>();
            write_key(state_dir, &key).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_key(state_dir: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = state_dir.join(".tunnel.key.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    writeln!(f, "{}", b64(key))?;
    f.sync_all()?;
    std::fs::rename(tmp, key_path(state_dir))
}
