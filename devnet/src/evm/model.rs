//! A simulated EVM chain carrying ERC-8004 registry activity, with reorgs.
//!
//! Blocks and logs are stored compactly; ABI data is encoded on request.
//! Registry state (agents, feedback counters, validation requests) evolves as
//! blocks are generated, so later events refer to earlier ones consistently.
//! A reorg regenerates the chain from genesis with the recorded branch salts,
//! then builds the replaced blocks on a new salt.

use std::collections::HashMap;

use alloy_primitives::{Address, Bloom, LogData, B256};

use super::abi::{EventFields, EventKind};
use crate::config::EvmChainConfig;
use crate::rng::{bytes32, mix, Rng};

/// One block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Height.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent hash.
    pub parent: B256,
    /// Unix timestamp.
    pub timestamp: u64,
    /// Branch salt (changes on reorg).
    pub salt: u32,
    /// Index of its first log in the chain's log list.
    pub first_log: u32,
    /// Number of logs.
    pub log_count: u32,
    /// Number of transactions.
    pub tx_count: u32,
}

/// One log in compact form.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Block height.
    pub block: u64,
    /// Transaction index in the block.
    pub tx_index: u32,
    /// Log index in the block.
    pub log_index: u32,
    /// Event kind.
    pub kind: EventKind,
    /// Agent id.
    pub agent_id: u64,
    /// Actor address index.
    pub actor: u32,
    /// Second address index.
    pub other: u32,
    /// Feedback index.
    pub feedback_index: u64,
    /// Value / score / response.
    pub value: i64,
    /// Seed of strings and hashes.
    pub nonce: u64,
    /// Nonce of the log this one refers to (validation request of a response).
    pub reference: u64,
}

/// A fully rendered log.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedLog {
    /// Emitting contract.
    pub address: Address,
    /// Topics and data.
    pub data: LogData,
    /// Block height.
    pub block_number: u64,
    /// Block hash.
    pub block_hash: B256,
    /// Block timestamp.
    pub block_timestamp: u64,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Transaction index.
    pub tx_index: u32,
    /// Log index in the block.
    pub log_index: u32,
}

#[derive(Debug, Default, Clone)]
struct GenState {
    next_agent: u64,
    owners: Vec<u32>,
    feedback: Vec<(u64, u32, u64, bool)>,
    fb_count: HashMap<(u64, u32), u64>,
    requests: Vec<(u32, u64, u64)>,
}

const TAGS: [&str; 5] = ["quality", "speed", "uptime", "accuracy", "price"];
const KEYS: [&str; 3] = ["agentWallet", "a2a", "mcp"];

/// Deterministic EVM chain state.
#[derive(Debug)]
pub struct EvmChain {
    seed: u64,
    /// Configuration.
    pub config: EvmChainConfig,
    /// Identity, reputation and validation registry addresses.
    pub contracts: [Address; 3],
    /// Canonical blocks; index = number.
    pub blocks: Vec<Block>,
    /// Canonical logs in order.
    pub logs: Vec<LogRecord>,
    by_hash: HashMap<B256, u64>,
    state: GenState,
    reorgs: u32,
}

impl EvmChain {
    /// Builds the chain with its initial blocks.
    pub fn new(seed: u64, config: EvmChainConfig) -> Self {
        let contracts = [0u64, 1, 2].map(|k| {
            let mut b = bytes32(&[seed, 0x4552_4338, k]);
            b[12] = 0x80;
            b[13] = 0x04;
            Address::from_slice(&b[12..])
        });
        let mut chain = Self {
            seed,
            config,
            contracts,
            blocks: Vec::new(),
            logs: Vec::new(),
            by_hash: HashMap::new(),
            state: GenState::default(),
            reorgs: 0,
        };
        let n = chain.config.initial_blocks.max(1);
        for _ in 0..n {
            chain.push_block(0);
        }
        chain
    }

    /// Address of an actor index (EOAs: owners, clients, validators).
    pub fn address(&self, index: u32) -> Address {
        let b = bytes32(&[self.seed, 0x0045_4f41, index as u64]);
        Address::from_slice(&b[12..])
    }

    /// Latest block number.
    pub fn head(&self) -> u64 {
        self.blocks.len() as u64 - 1
    }

    /// Block by hash (canonical only).
    pub fn block_by_hash(&self, hash: &B256) -> Option<&Block> {
        self.by_hash.get(hash).map(|&n| &self.blocks[n as usize])
    }

    /// Adds `n` blocks.
    pub fn advance(&mut self, n: u64) {
        for _ in 0..n {
            self.push_block(self.reorgs);
        }
    }

    /// Replaces the last `depth` blocks with a different branch of the same length.
    pub fn reorg(&mut self, depth: u64) {
        let depth = depth.min(self.head());
        if depth == 0 {
            return;
        }
        self.reorgs += 1;
        let keep = self.blocks.len() - depth as usize;
        let salts: Vec<u32> = self.blocks[..keep].iter().map(|b| b.salt).collect();
        self.blocks.clear();
        self.logs.clear();
        self.by_hash.clear();
        self.state = GenState::default();
        for s in salts {
            self.push_block(s);
        }
        for _ in 0..depth {
            self.push_block(self.reorgs);
        }
    }

    /// Transaction hash.
    pub fn tx_hash(&self, block: &Block, tx_index: u32) -> B256 {
        B256::from(bytes32(&[
            self.seed,
            self.config.chain_id,
            0x5458,
            block.number,
            block.salt as u64,
            tx_index as u64,
        ]))
    }

    /// Logs of a block.
    pub fn block_logs(&self, block: &Block) -> &[LogRecord] {
        let s = block.first_log as usize;
        &self.logs[s..s + block.log_count as usize]
    }

    /// Emitting contract of a log.
    pub fn log_address(&self, rec: &LogRecord) -> Address {
        self.contracts[rec.kind.registry() as usize]
    }

    /// Decoded fields of a log.
    pub fn fields(&self, rec: &LogRecord) -> EventFields {
        let n = rec.nonce;
        let hex8 = format!("{:016x}", mix(&[n, 1]));
        let tag = |k: u64| TAGS[(mix(&[n, k]) % TAGS.len() as u64) as usize].to_string();
        let (uri, tag1, tag2) = match rec.kind {
            EventKind::Registered | EventKind::UriUpdated | EventKind::LegacyUriUpdated => (
                format!("ipfs://bafkrei{hex8}/agent-{}.json", rec.agent_id),
                String::new(),
                String::new(),
            ),
            EventKind::MetadataSet => {
                let key = KEYS[(n % KEYS.len() as u64) as usize];
                (String::new(), key.to_string(), format!("0x{hex8}"))
            }
            EventKind::NewFeedback | EventKind::LegacyNewFeedback => (
                format!("ipfs://bafkrei{hex8}/feedback.json"),
                tag(2),
                tag(3),
            ),
            EventKind::ResponseAppended => (
                format!("https://agent{}.example/responses/{hex8}", rec.agent_id),
                String::new(),
                String::new(),
            ),
            EventKind::ValidationRequest => (
                format!("ipfs://bafkrei{hex8}/request.json"),
                String::new(),
                String::new(),
            ),
            EventKind::ValidationResponse => (
                format!("ipfs://bafkrei{hex8}/response.json"),
                tag(4),
                String::new(),
            ),
            EventKind::Transfer | EventKind::FeedbackRevoked => {
                (String::new(), String::new(), String::new())
            }
        };
        EventFields {
            kind: rec.kind,
            agent_id: rec.agent_id,
            actor: self.address(rec.actor),
            other: self.address(rec.other),
            feedback_index: rec.feedback_index,
            value: rec.value,
            uri,
            tag1,
            tag2,
            endpoint: format!("https://agent{}.example/a2a", rec.agent_id),
            hash: B256::from(bytes32(&[
                if rec.kind == EventKind::ValidationResponse {
                    rec.reference
                } else {
                    n
                },
                0x4831,
            ])),
            hash2: B256::from(bytes32(&[n, 0x4832])),
        }
    }

    /// Renders one log with its position.
    pub fn render(&self, rec: &LogRecord) -> RenderedLog {
        let block = &self.blocks[rec.block as usize];
        RenderedLog {
            address: self.log_address(rec),
            data: self.fields(rec).encode(),
            block_number: block.number,
            block_hash: block.hash,
            block_timestamp: block.timestamp,
            tx_hash: self.tx_hash(block, rec.tx_index),
            tx_index: rec.tx_index,
            log_index: rec.log_index,
        }
    }

    /// logsBloom of a block.
    pub fn bloom(&self, block: &Block) -> Bloom {
        let mut bloom = Bloom::default();
        for rec in self.block_logs(block) {
            let r = self.fields(rec).encode();
            bloom.accrue_raw_log(self.log_address(rec), r.topics());
        }
        bloom
    }

    fn push_block(&mut self, salt: u32) {
        let number = self.blocks.len() as u64;
        let parent = self.blocks.last().map_or(B256::ZERO, |b| b.hash);
        let hash = B256::from(bytes32(&[
            self.seed,
            self.config.chain_id,
            0x424c,
            number,
            salt as u64,
            u64::from_be_bytes(parent[..8].try_into().unwrap_or([0; 8])),
        ]));
        let first_log = self.logs.len() as u32;
        let mut rng = Rng::new(&[self.seed, self.config.chain_id, number, salt as u64]);
        let actions = if number == 0 {
            0
        } else {
            rng.below(self.config.logs_per_block as u64 * 2 + 1) as u32
        };
        let mut tx = 0u32;
        for _ in 0..actions {
            if self.gen_action(&mut rng, number, tx) {
                tx += 1;
            }
        }
        self.by_hash.insert(hash, number);
        self.blocks.push(Block {
            number,
            hash,
            parent,
            timestamp: self.config.genesis_time + number * self.config.block_time_secs,
            salt,
            first_log,
            log_count: self.logs.len() as u32 - first_log,
            tx_count: tx,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn push_log(
        &mut self,
        rng: &mut Rng,
        block: u64,
        tx: u32,
        kind: EventKind,
        agent: u64,
        actor: u32,
        other: u32,
        index: u64,
        value: i64,
    ) {
        let log_index = self
            .logs
            .iter()
            .rev()
            .take_while(|l| l.block == block)
            .count() as u32;
        let nonce = rng.next_u64();
        self.logs.push(LogRecord {
            block,
            tx_index: tx,
            log_index,
            kind,
            agent_id: agent,
            actor,
            other,
            feedback_index: index,
            value,
            nonce,
            reference: 0,
        });
    }

    /// Generates one transaction's logs; false if nothing was emitted.
    fn gen_action(&mut self, rng: &mut Rng, block: u64, tx: u32) -> bool {
        let legacy = self.config.legacy_events;
        let roll = rng.below(100);
        let have_agents = !self.state.owners.is_empty();
        if roll < 25 || !have_agents {
            let agent = self.state.next_agent;
            self.state.next_agent += 1;
            let owner = rng.below(500) as u32;
            self.state.owners.push(owner);
            self.push_log(rng, block, tx, EventKind::Transfer, agent, owner, 0, 0, 0);
            self.push_log(rng, block, tx, EventKind::Registered, agent, owner, 0, 0, 0);
            if rng.chance(0.5) {
                self.push_log(
                    rng,
                    block,
                    tx,
                    EventKind::MetadataSet,
                    agent,
                    owner,
                    0,
                    0,
                    0,
                );
            }
            return true;
        }
        let agent = rng.below(self.state.next_agent);
        let owner = self.state.owners[agent as usize];
        match roll {
            25..=34 => {
                let kind = if legacy && rng.chance(0.2) {
                    EventKind::LegacyUriUpdated
                } else {
                    EventKind::UriUpdated
                };
                self.push_log(rng, block, tx, kind, agent, owner, 0, 0, 0);
            }
            35..=41 => self.push_log(
                rng,
                block,
                tx,
                EventKind::MetadataSet,
                agent,
                owner,
                0,
                0,
                0,
            ),
            42..=66 => {
                let client = 1000 + rng.below(500) as u32;
                let count = self.state.fb_count.entry((agent, client)).or_insert(0);
                *count += 1;
                let index = *count;
                self.state.feedback.push((agent, client, index, false));
                let (kind, value) = if legacy && rng.chance(0.15) {
                    (EventKind::LegacyNewFeedback, rng.range(0, 100) as i64)
                } else {
                    (EventKind::NewFeedback, rng.range(0, 200) as i64 - 50)
                };
                self.push_log(rng, block, tx, kind, agent, client, 0, index, value);
            }
            67..=81 if self.state.feedback.is_empty() => return false,
            67..=73 => {
                let i = rng.below(self.state.feedback.len() as u64) as usize;
                let (a, client, index, revoked) = self.state.feedback[i];
                if revoked {
                    return false;
                }
                self.state.feedback[i].3 = true;
                self.push_log(
                    rng,
                    block,
                    tx,
                    EventKind::FeedbackRevoked,
                    a,
                    client,
                    0,
                    index,
                    0,
                );
            }
            74..=81 => {
                let i = rng.below(self.state.feedback.len() as u64) as usize;
                let (a, client, index, _) = self.state.feedback[i];
                let responder = self.state.owners[a as usize];
                self.push_log(
                    rng,
                    block,
                    tx,
                    EventKind::ResponseAppended,
                    a,
                    client,
                    responder,
                    index,
                    0,
                );
            }
            82..=91 => {
                let validator = 2000 + rng.below(50) as u32;
                let nonce_at = self.logs.len();
                self.push_log(
                    rng,
                    block,
                    tx,
                    EventKind::ValidationRequest,
                    agent,
                    validator,
                    0,
                    0,
                    0,
                );
                let nonce = self.logs[nonce_at].nonce;
                self.state.requests.push((validator, agent, nonce));
            }
            _ => {
                if self.state.requests.is_empty() {
                    return false;
                }
                let i = rng.below(self.state.requests.len() as u64) as usize;
                let (validator, a, req_nonce) = self.state.requests[i];
                let at = self.logs.len();
                let response = rng.range(0, 100) as i64;
                self.push_log(
                    rng,
                    block,
                    tx,
                    EventKind::ValidationResponse,
                    a,
                    validator,
                    0,
                    0,
                    response,
                );
                // The response refers to the request's hash: reuse its nonce for `hash`.
                self.logs[at].reference = req_nonce;
            }
        }
        true
    }
}
