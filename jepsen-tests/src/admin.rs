//! Admin requests the harness sends to single nodes with the client certificate, outside the
//! client library's coordinated path: `Status` (readiness), `Repair` (run an anti-entropy round
//! now), `Inspect` (a node's own record of a key, tombstones included) and `Membership` (the
//! ring, and the joins and leaves of the membership nemesis).

use client::client::{membership_at, status_at, transport_error};
use client::ClientError;
use proto::membership::{MembershipOp, MembershipView};
use proto::message::{NodeStatus, RepairReport};
use proto::tls::TlsMaterial;
use proto::transport::{client_endpoint, Pool};
use proto::{Record, Request, Response};
use std::net::SocketAddr;
use std::time::Duration;

/// How long establishing a connection to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection pool for admin requests.
pub struct Admin {
    pool: Pool,
}

impl Admin {
    /// An admin client with the cluster's client certificate.
    pub fn new(tls: &TlsMaterial) -> Result<Admin, ClientError> {
        let endpoint = client_endpoint(tls).map_err(transport_error)?;
        Ok(Admin {
            pool: Pool::new(endpoint, CONNECT_TIMEOUT),
        })
    }

    /// The node's status report.
    pub async fn status(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<NodeStatus, ClientError> {
        status_at(&self.pool, addr, timeout).await
    }

    /// Runs an anti-entropy round on the node, with every peer, and returns its report.
    pub async fn repair(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<RepairReport, ClientError> {
        match self
            .call(addr, Request::Repair { wait: true }, timeout)
            .await?
        {
            Response::RepairReport(r) => Ok(r),
            other => Err(unexpected("Repair", other)),
        }
    }

    /// The node's own record of `key` (`None`: it has none).
    pub async fn inspect(
        &self,
        addr: SocketAddr,
        key: &[u8],
        timeout: Duration,
    ) -> Result<Option<Record>, ClientError> {
        let req = Request::Inspect { key: key.to_vec() };
        match self.call(addr, req, timeout).await? {
            Response::ReplicaRecord { record } => Ok(record),
            other => Err(unexpected("Inspect", other)),
        }
    }

    /// A membership operation (show, stage a join or leave, commit) on the node.
    pub async fn membership(
        &self,
        addr: SocketAddr,
        op: MembershipOp,
        timeout: Duration,
    ) -> Result<MembershipView, ClientError> {
        membership_at(&self.pool, addr, op, timeout).await
    }

    async fn call(
        &self,
        addr: SocketAddr,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        match self.pool.call(addr, req, timeout).await {
            Ok(Response::Error(e)) => Err(e.into()),
            Ok(resp) => Ok(resp),
            Err(e) => Err(transport_error(e)),
        }
    }
}

fn unexpected(what: &str, resp: Response) -> ClientError {
    ClientError::Server(format!(
        "unexpected reply to {what} (does this ringkv-node support it?): {resp:?}"
    ))
}
