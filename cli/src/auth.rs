//! `cairn auth init|node|revoke`: credentials for a deployment, with NATS's own
//! decentralised auth. An operator key signs one account for cairn (and NATS's system
//! account); the account key signs a user per role and per node, each user's JWT carrying
//! its permissions. The server trusts the operator alone (`nats-server.conf`), so issuing
//! a node's credentials changes nothing on the server, and revoking them is an updated
//! account JWT pushed to the running server through the system account.
//!
//! What each role may do is in `roles.rs`.

mod roles;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use cairn_shared::NodeId;
use nats_jwt_rs::Claims;
use nats_jwt_rs::account::{Account, JetStreamLimits};
use nats_jwt_rs::operator::Operator;
use nats_jwt_rs::user::User;
use nkeys::KeyPair;
use serde::Serialize;

use crate::Global;
use crate::output;

pub use roles::Role;

/// The name of cairn's account.
const ACCOUNT: &str = "CAIRN";
/// The name of NATS's system account, through which revocations reach the server.
const SYSTEM: &str = "SYS";

/// The files of one deployment's credentials, under `--dir`.
struct Layout(PathBuf);

impl Layout {
    fn new(dir: &Path) -> Result<Self> {
        let dir =
            std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn seed(&self, name: &str) -> PathBuf {
        self.0.join("keys").join(format!("{name}.nk"))
    }

    fn jwt(&self, name: &str) -> PathBuf {
        self.0.join("keys").join(format!("{name}.jwt"))
    }

    fn node(&self, node: &NodeId) -> PathBuf {
        self.0.join("nodes").join(format!("{node}.creds"))
    }

    fn config(&self) -> PathBuf {
        self.path("nats-server.conf")
    }

    fn ca(&self) -> PathBuf {
        self.0.join("tls").join("ca.pem")
    }

    /// The paths of what `init` makes here.
    fn made(&self) -> Initialised {
        Initialised {
            dir: self.0.clone(),
            config: self.config(),
            orchestrator: self.path("orchestrator.creds"),
            admin: self.path("admin.creds"),
            reader: self.path("reader.creds"),
            http_token: self.path("http.token"),
            tls_ca: self.ca().exists().then(|| self.ca()),
        }
    }

    /// Whether `init` has run here.
    fn initialised(&self) -> bool {
        self.seed("operator").exists() && self.seed(ACCOUNT).exists()
    }

    fn key(&self, name: &str) -> Result<KeyPair> {
        let path = self.seed(name);
        let seed = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: is {} a directory made by `cairn auth init`?",
                path.display(),
                self.0.display()
            )
        })?;
        KeyPair::from_seed(seed.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// What `init` made, for `-o json`.
#[derive(Serialize)]
pub struct Initialised {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub orchestrator: PathBuf,
    pub admin: PathBuf,
    pub reader: PathBuf,
    /// The bearer token of the orchestrator's HTTP API (`--http-token`).
    pub http_token: PathBuf,
    /// The CA every client must trust (`--tls-ca`), with `--tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
}

/// The names a server certificate is for when `--tls-host` gives none: this machine.
pub const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `init`'s TLS: none, or a CA and a server certificate for these names.
pub struct Tls {
    pub hosts: Vec<String>,
}

pub fn init(global: &Global, dir: &Path, tls: Option<Tls>, if_missing: bool) -> Result<()> {
    let layout = Layout::new(dir)?;
    if layout.initialised() && if_missing {
        eprintln!(
            "{} already holds a deployment's keys; they stay as they are",
            layout.0.display()
        );
        return Ok(());
    }
    if layout.initialised() {
        bail!(
            "{} already holds a deployment's keys; `cairn auth node` adds nodes to it (remove \
             the directory to start over, which invalidates every credential it issued)",
            layout.0.display()
        );
    }
    let made = create(&layout, tls.as_ref())?;
    output::print(global.output, &made, || {
        let tls = made
            .tls_ca
            .as_ref()
            .map(|ca| {
                format!(
                    "  every part:    --tls-ca {} (TLS is required)\n",
                    ca.display()
                )
            })
            .unwrap_or_default();
        format!(
            "credentials in {}\n  run a server:  nats-server -c {} -p 4222 -sd STORE\n  orchestrator:  --creds {} [--http ADDR --http-token {}]\n  CLI (admin):   --creds {}\n  CLI (reader):  --creds {}\n  a node:        cairn auth node ID --dir {}\n{tls}",
            made.dir.display(),
            made.config.display(),
            made.orchestrator.display(),
            made.http_token.display(),
            made.admin.display(),
            made.reader.display(),
            made.dir.display()
        )
    })
}

/// A deployment's credentials in `dir`, made there first (with `tls`) if it holds none
/// (`cairn dev --secure`).
pub fn ensure(dir: &Path, tls: Option<&Tls>) -> Result<Initialised> {
    let layout = Layout::new(dir)?;
    if layout.initialised() {
        // Made before the HTTP API had a token.
        if !layout.path("http.token").exists() {
            write_http_token(&layout)?;
        }
        return Ok(layout.made());
    }
    create(&layout, tls)
}

/// `node`'s credentials in `dir`, issued first if there are none.
pub fn node_creds(dir: &Path, node: &NodeId) -> Result<PathBuf> {
    let layout = Layout::new(dir)?;
    let creds = layout.node(node);
    if !creds.exists() {
        issue(&layout.key(ACCOUNT)?, Role::Node(node.clone()), &creds)?;
    }
    Ok(creds)
}

/// Makes every key, JWT, credential and the configuration in `layout`.
fn create(layout: &Layout, tls: Option<&Tls>) -> Result<Initialised> {
    for sub in ["keys", "nodes", "resolver"] {
        create_private_dir(&layout.path(sub))?;
    }
    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let account = KeyPair::new_account();
    write_secret(&layout.seed("operator"), &seed_of(&operator)?)?;
    write_secret(&layout.seed(SYSTEM), &seed_of(&system)?)?;
    write_secret(&layout.seed(ACCOUNT), &seed_of(&account)?)?;

    let mut claims = Operator::new_claims("cairn".into(), operator.public_key());
    claims.payload_mut().system_account = Some(system.public_key());
    write_public(&layout.jwt("operator"), &encode(&claims, &operator)?)?;
    let system_jwt = encode(
        &Account::new_claims(SYSTEM.into(), system.public_key()),
        &operator,
    )?;
    write_public(&layout.jwt(SYSTEM), &system_jwt)?;
    write_public(
        &layout.jwt(ACCOUNT),
        &account_jwt(&operator, &account, &[])?,
    )?;

    // The system account's user only pushes account updates (revocations).
    let system_user = KeyPair::new_user();
    let mut claims = User::new_claims("cairn-system".into(), system_user.public_key());
    claims.payload_mut().permissions.permissions = roles::system();
    write_creds(
        &layout.path("system.creds"),
        &encode(&claims, &system)?,
        &system_user,
    )?;
    for role in [Role::Orchestrator, Role::Admin, Role::Reader] {
        let path = layout.path(&format!("{role}.creds"));
        issue(&account, role, &path)?;
    }
    if let Some(tls) = tls {
        make_tls(layout, &tls.hosts)?;
    }
    write_http_token(layout)?;
    write_config(layout)?;
    Ok(layout.made())
}

/// What `node` made.
#[derive(Serialize)]
struct Issued {
    node: NodeId,
    creds: PathBuf,
}

/// Issues `node`'s credentials, or gives the path of those already issued: a second key
/// for one node would stay valid beside the first, unseen (`revoke` cuts off every key
/// issued so far, after which this issues a new one).
pub fn node(global: &Global, dir: &Path, node: NodeId) -> Result<()> {
    let layout = Layout::new(dir)?;
    let account = layout.key(ACCOUNT)?;
    let creds = layout.node(&node);
    if creds.exists() {
        eprintln!("node {node} already has credentials; they stay as they are");
    } else {
        issue(&account, Role::Node(node.clone()), &creds)?;
    }
    let issued = Issued { node, creds };
    output::print(global.output, &issued, || {
        format!("{}\n", issued.creds.display())
    })
}

/// What `revoke` did.
#[derive(Serialize)]
struct Revoked {
    node: NodeId,
    /// The user keys of the node's credentials that stop working.
    keys: Vec<String>,
    /// Whether the server at `--nats` took the update.
    pushed: bool,
}

pub async fn revoke(global: &Global, dir: &Path, node: NodeId) -> Result<()> {
    let layout = Layout::new(dir)?;
    let operator = layout.key("operator")?;
    let account = layout.key(ACCOUNT)?;
    let creds = layout.node(&node);
    let issued = std::fs::read_to_string(&creds).with_context(|| {
        format!(
            "no credentials for node {node} in {}: `cairn auth node {node}` issues them",
            layout.0.display()
        )
    })?;
    let user = user_key_of(&issued)
        .with_context(|| format!("reading the user key of {}", creds.display()))?;
    let revocations = layout.path("revocations.json");
    let mut revoked: std::collections::BTreeMap<String, u64> = match std::fs::read(&revocations) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", revocations.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", revocations.display())),
    };
    // Every JWT for this key issued up to now stops working; a later `auth node` for the
    // same id makes a new key.
    revoked.insert(user.clone(), unix_now());
    let entries: Vec<(String, u64)> = revoked.clone().into_iter().collect();
    let jwt = account_jwt(&operator, &account, &entries)?;
    write_public(&revocations, &serde_json::to_string_pretty(&revoked)?)?;
    write_public(&layout.jwt(ACCOUNT), &jwt)?;
    write_config(&layout)?;
    std::fs::rename(&creds, creds.with_extension("creds.revoked"))
        .with_context(|| format!("setting aside {}", creds.display()))?;
    let pushed = push(global, &layout, &jwt).await;
    let done = Revoked {
        node: node.clone(),
        keys: vec![user],
        pushed: pushed.is_ok(),
    };
    if let Err(e) = pushed {
        bail!(
            "node {node} is revoked in {} (and in its nats-server.conf), but the server at {} \
             did not take the update: {e:#}; run `cairn auth revoke` again when it is up, or \
             restart it with the new configuration",
            layout.0.display(),
            global.nats
        );
    }
    output::print(global.output, &done, || {
        format!(
            "node {node} revoked: the server at {} cut it off\n",
            global.nats
        )
    })
}

/// Sends the account's new JWT to the running server (or cluster) through the system
/// account, as `nsc push` does.
async fn push(global: &Global, layout: &Layout, jwt: &str) -> Result<()> {
    // The deployment's own CA unless --tls-ca names another.
    let tls_ca = global
        .tls_ca
        .clone()
        .or_else(|| layout.ca().exists().then(|| layout.ca()));
    let access = cairn_streams::Access {
        creds: Some(layout.path("system.creds")),
        tls_ca,
        inbox_prefix: None,
    };
    let client = cairn_streams::connect_as(&global.nats, &access, "cairn-auth", false).await?;
    let reply = client
        .request("$SYS.REQ.CLAIMS.UPDATE", jwt.to_owned().into())
        .await
        .context("asking the server to update the account")?;
    let answer: serde_json::Value =
        serde_json::from_slice(&reply.payload).context("reading the server's answer")?;
    if let Some(error) = answer.get("error") {
        bail!("the server refused the update: {error}");
    }
    Ok(())
}

/// Issues a user of `role` signed by the account, written as a creds file at `path`.
fn issue(account: &KeyPair, role: Role, path: &Path) -> Result<()> {
    let user = KeyPair::new_user();
    let mut claims = User::new_claims(role.user_name(), user.public_key());
    claims.payload_mut().permissions.permissions = role.permissions();
    let jwt = encode(&claims, account)?;
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    write_creds(path, &jwt, &user)
}

/// A random bearer token for the orchestrator's read-only HTTP API: 32 bytes from the
/// kernel, in hex.
fn write_http_token(layout: &Layout) -> Result<()> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading randomness for the HTTP token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_secret(&layout.path("http.token"), &format!("{token}\n"))
}

/// cairn's account: JetStream on without limits, and these users' JWTs revoked.
fn account_jwt(operator: &KeyPair, account: &KeyPair, revoked: &[(String, u64)]) -> Result<String> {
    let mut claims = Account::new_claims(ACCOUNT.into(), account.public_key());
    let payload = claims.payload_mut();
    if let Some(limits) = payload.limits.as_mut() {
        limits.jetstream = Some(JetStreamLimits {
            memory_storage: Some(-1),
            disk_storage: Some(-1),
            streams: Some(-1),
            consumer: Some(-1),
            ..Default::default()
        });
    }
    if !revoked.is_empty() {
        payload.revocations = Some(revoked.iter().cloned().collect());
    }
    encode(&claims, operator)
}

/// A CA (`tls/ca.pem`, its key beside it) and a server certificate signed by it for
/// `hosts` (`tls/server.pem`, `tls/server-key.pem`).
fn make_tls(layout: &Layout, hosts: &[String]) -> Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyUsagePurpose,
    };
    let dir = layout.path("tls");
    create_private_dir(&dir)?;
    // Valid from the start of this year for ten years.
    let year = i32::try_from(1970 + unix_now() / 31_556_952).unwrap_or(2026);
    let (now, until) = (
        rcgen::date_time_ymd(year, 1, 1),
        rcgen::date_time_ymd(year + 10, 1, 1),
    );
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "cairn deployment CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (now, until);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    write_public(&layout.ca(), &ca_cert.pem())?;
    write_secret(&dir.join("ca-key.pem"), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(hosts.to_vec())
        .context("the --tls-host names must be DNS names or IP addresses")?;
    server
        .distinguished_name
        .push(DnType::CommonName, "cairn nats-server");
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    (server.not_before, server.not_after) = (now, until);
    let key = rcgen::KeyPair::generate()?;
    let cert = server.signed_by(&key, &issuer)?;
    write_public(&dir.join("server.pem"), &cert.pem())?;
    write_secret(&dir.join("server-key.pem"), &key.serialize_pem())
}

/// The server's configuration: trust the operator, keep account JWTs in a full resolver
/// (which accepts updates while running) seeded with the current ones, JetStream on.
fn write_config(layout: &Layout) -> Result<()> {
    let operator = std::fs::read_to_string(layout.jwt("operator"))?;
    let system = layout.key(SYSTEM)?.public_key();
    let account = layout.key(ACCOUNT)?.public_key();
    let system_jwt = std::fs::read_to_string(layout.jwt(SYSTEM))?;
    let account_jwt = std::fs::read_to_string(layout.jwt(ACCOUNT))?;
    let tls = if layout.ca().exists() {
        format!(
            "# Clients must use TLS and trust {ca}.\ntls: {{\n  cert_file: {cert}\n  key_file: {key}\n  timeout: 2\n}}\n",
            ca = layout.ca().display(),
            cert = quote(&layout.path("tls/server.pem")),
            key = quote(&layout.path("tls/server-key.pem")),
        )
    } else {
        String::new()
    };
    let text = format!(
        "# A nats-server that accepts only the credentials `cairn auth` issues (operator mode).\n\
         # Made by `cairn auth init`; `cairn auth revoke` rewrites the account below.\n\
         # Run: nats-server -c {config} -p PORT -sd STORE\n\
         operator: {operator}\n\
         system_account: {system}\n\
         jetstream: enabled\n\
         resolver: {{\n  type: full\n  dir: {resolver}\n  allow_delete: false\n  interval: \"2m\"\n}}\n\
         resolver_preload: {{\n  {system}: {system_jwt}\n  {account}: {account_jwt}\n}}\n{tls}",
        config = quote(&layout.config()),
        operator = operator.trim(),
        resolver = quote(&layout.path("resolver")),
        system_jwt = system_jwt.trim(),
        account_jwt = account_jwt.trim(),
    );
    write_public(&layout.config(), &text)
}

fn quote(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn encode<T>(claims: &Claims<T>, signer: &KeyPair) -> Result<String>
where
    T: nats_jwt_rs::Claim + serde::de::DeserializeOwned + Serialize + Clone,
{
    claims
        .encode(signer)
        .map_err(|e| anyhow::anyhow!("signing a JWT: {e}"))
}

fn seed_of(key: &KeyPair) -> Result<String> {
    key.seed()
        .map_err(|e| anyhow::anyhow!("reading a key's seed: {e}"))
}

/// A creds file as `nsc` writes it: the user's JWT and its seed.
fn write_creds(path: &Path, jwt: &str, user: &KeyPair) -> Result<()> {
    let seed = seed_of(user)?;
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    write_secret(path, &text)
}

/// The public user key a creds file's JWT names.
fn user_key_of(creds: &str) -> Result<String> {
    let jwt = creds
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN NATS USER JWT"))
        .nth(1)
        .context("no user JWT")?;
    let claims = Claims::<User>::decode(jwt.trim()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(claims.sub)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Writes a file only its owner can read: seeds and credentials.
fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a file that holds nothing secret (JWTs are signed, not hidden).
fn write_public(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
