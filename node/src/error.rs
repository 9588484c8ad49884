use cairn_artifact::Cid;

/// Errors of the node and the network client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cairn_artifact::Error),
    /// The peer layer failed.
    #[error(transparent)]
    Swarm(#[from] cairn_swarm::Error),
    /// A peer address could not be parsed.
    #[error("invalid peer address {given:?}: {reason}; expected <endpoint id>@<ip:port>")]
    BadPeerAddr {
        /// The text given.
        given: String,
        /// What was wrong.
        reason: String,
    },
    /// No bootstrap peer answered.
    #[error(
        "no bootstrap peer answered ({reasons}); check that the nodes are running and the addresses are right"
    )]
    NoPeers {
        /// Why each failed.
        reasons: String,
    },
    /// Fewer live nodes than the erasure code needs.
    #[error(
        "only {live} live nodes for a {k}-of-{n} code: each shard of a chunk needs its own node; add nodes, lower -k/-m, or pass --allow-reduced-durability"
    )]
    TooFewNodes {
        /// Live nodes.
        live: usize,
        /// Data shards.
        k: usize,
        /// All shards.
        n: usize,
    },
    /// No holder record for the artifact could be found.
    #[error(
        "artifact {artifact}: no node knows it ({reasons}); it was never published to this network or its holders are down"
    )]
    ArtifactUnknown {
        /// The artifact.
        artifact: Cid,
        /// Why each node asked did not help.
        reasons: String,
    },
    /// A shard could not be placed on any node.
    #[error("shard {cid} of chunk {chunk}: no node took it ({reasons})")]
    Placement {
        /// The shard.
        cid: Cid,
        /// The chunk index.
        chunk: usize,
        /// Why each node refused.
        reasons: String,
    },
    /// Binding or running the node failed.
    #[error("node: {0}")]
    Node(String),
}
