//! Why an agent command was refused.

/// An agent command broke one of the agent's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The agent does not exist.
    #[error("agent not found")]
    NotFound,
    /// `EnrollAgent` on an agent that already exists.
    #[error("agent already exists")]
    AlreadyExists,
    /// The agent is revoked and accepts no command; enroll the machine again as a new agent.
    #[error("agent is revoked")]
    Revoked,
}
