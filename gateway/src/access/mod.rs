//! Who may read what: API keys, wallet sign-ins and on-chain gates.
//!
//! - [`policy`]: the on-chain gate format (conditions on ERC-20/721/1155 holdings, `all`/`any`).
//! - [`chain`]: the gate's conditions asked of the chains' RPC endpoints, fail closed, cached.
//! - [`siwe`]: Sign-In with Ethereum: nonces, message and signature checks, session tokens.
//! - [`authorizer`]: the [`crate::Authorizer`] that combines API keys, sessions and gates.
//!
//! API keys (format, scopes, the key store, the rate limiter and the audit log) live in the
//! `apikey` module beside this one.

pub mod authorizer;
pub mod chain;
pub mod policy;
pub mod routes;
pub mod siwe;
