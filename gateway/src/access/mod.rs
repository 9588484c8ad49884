//! Who may read what: API keys, wallet sign-ins and on-chain gates.
//!
//! One file per job:
//! - `hook`: the authorization hook every request goes through: [`crate::Authorizer`],
//!   [`crate::AccessPolicy`], [`crate::AccessRequest`], [`crate::Decision`],
//!   [`crate::PublicOnly`].
//! - `keys`: the API key format ([`crate::ApiKey`], [`crate::parse_api_key`]).
//! - `scopes`: what a key may reach ([`crate::Scope`]) and from where ([`crate::IpNet`]).
//! - `keystore`: the key store ([`crate::ApiKeyStore`]: hashed keys, rotation) and its audit
//!   logs, in `gateway.redb`.
//! - `ratelimit`: the keys' token buckets.
//! - `keycheck`: the check of a presented key, in order, audited ([`crate::ApiKeyAuthorizer`]).
//! - [`policy`]: the on-chain gate format (conditions on ERC-20/721/1155 holdings, `all`/`any`).
//! - [`chain`]: the gate's conditions asked of the chains' RPC endpoints, fail closed, cached.
//! - [`siwe`]: Sign-In with Ethereum: nonces, message and signature checks, session tokens.
//! - [`routes`]: the `/auth` endpoints (the sign-in page, nonces, sessions).
//! - [`authorizer`]: the [`crate::Authorizer`] that combines API keys, sessions and gates.
//!
//! Client certificates bound to keys (mutual TLS) are checked in the `clientcert` module.

pub mod authorizer;
pub mod chain;
pub(crate) mod hook;
pub(crate) mod keycheck;
pub(crate) mod keys;
pub(crate) mod keystore;
pub mod policy;
pub(crate) mod ratelimit;
pub mod routes;
pub(crate) mod scopes;
pub mod siwe;
