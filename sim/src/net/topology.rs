//! Where the simulated nodes are and how the network between them behaves:
//! datacenters placed on rows of a measured latency matrix or at map
//! coordinates, latency and jitter distributions inside a datacenter, and
//! per-link loss. [`Topology::realize`] turns the model into one concrete
//! latency and loss for every pair of nodes, drawn from the run's seed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::seed::derive_seed;
use crate::seed::SplitMix;
use crate::tomography::Matrix;

/// A probability distribution of durations (latencies, jitter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    /// Always this value.
    Const(Duration),
    /// Uniform between `min` and `max`.
    Uniform {
        /// Smallest value.
        min: Duration,
        /// Largest value.
        max: Duration,
    },
    /// Normal with this mean and standard deviation, cut off at zero.
    Normal {
        /// Mean.
        mean: Duration,
        /// Standard deviation.
        stddev: Duration,
    },
    /// Exponential with this mean (a long tail of rare large values).
    Exponential {
        /// Mean.
        mean: Duration,
    },
}

impl Default for Dist {
    fn default() -> Self {
        Dist::Const(Duration::ZERO)
    }
}

impl Dist {
    /// Draws one value.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let secs = match *self {
            Dist::Const(d) => return d,
            Dist::Uniform { min, max } => {
                let (lo, hi) = (min.as_secs_f64(), max.as_secs_f64());
                lo + (hi - lo) * rng.random::<f64>()
            }
            Dist::Normal { mean, stddev } => {
                // Box-Muller: one normal deviate from two uniforms.
                let u1 = 1.0 - rng.random::<f64>();
                let u2 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                mean.as_secs_f64() + stddev.as_secs_f64() * z
            }
            Dist::Exponential { mean } => -mean.as_secs_f64() * (1.0 - rng.random::<f64>()).ln(),
        };
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
    }

    /// Whether every draw is zero (no need to draw at all).
    pub fn is_zero(&self) -> bool {
        matches!(self, Dist::Const(d) if d.is_zero())
    }

    /// The distribution's mean.
    pub fn mean(&self) -> Duration {
        match *self {
            Dist::Const(d) => d,
            Dist::Uniform { min, max } => (min + max) / 2,
            Dist::Normal { mean, .. } | Dist::Exponential { mean } => mean,
        }
    }
}

/// Where a datacenter is.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// Nowhere in particular: only intra-datacenter latency applies, and
    /// links to other datacenters use `[latency] inter_dc`.
    Unplaced,
    /// A row (a city or a host) of the latency matrix.
    Row(u32),
    /// A point on the map, degrees; latency grows with great-circle distance.
    Geo {
        /// Latitude, degrees north.
        lat: f64,
        /// Longitude, degrees east.
        lon: f64,
    },
}

/// The role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// An agent in client mode.
    Client,
    /// A server (keeps the replicated state).
    Server,
}

impl Role {
    /// The name used in selectors and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// One datacenter.
#[derive(Debug, Clone, PartialEq)]
pub struct Datacenter {
    /// Name, like `dc1`; nodes are named after it.
    pub name: String,
    /// Client agents.
    pub clients: usize,
    /// Servers.
    pub servers: usize,
    /// Where it is.
    pub location: Location,
}

/// One simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Name, unique in the run.
    pub name: String,
    /// Index of its datacenter in [`Topology::datacenters`].
    pub dc: usize,
    /// What it runs as.
    pub role: Role,
}

/// Which nodes gossip with which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolScope {
    /// One LAN pool per datacenter, as in Consul.
    #[default]
    Datacenter,
    /// One pool spanning every datacenter, as a flat Serf cluster.
    Global,
}

/// Each link's bandwidth unless a scenario says otherwise: 1 Gbit/s.
pub const DEFAULT_BANDWIDTH: f64 = 125e6;

/// The latency model.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyModel {
    /// One-way latency of a link inside a datacenter, drawn once per link.
    pub intra_dc: Dist,
    /// One-way latency between datacenters that are not placed.
    pub inter_dc: Duration,
    /// Extra delay of each UDP datagram, drawn per datagram.
    pub jitter: Dist,
    /// Share of UDP datagrams lost on every link.
    pub loss: f64,
    /// Bytes per second each link carries, per direction (infinite: no
    /// limit). Stream bytes queue behind each other and take their
    /// transmission time.
    pub bandwidth: f64,
    /// Share of UDP datagrams delivered twice.
    pub duplicate: f64,
    /// Share of UDP datagrams held back by up to another latency, so that
    /// datagrams sent after them may arrive first.
    pub reorder: f64,
    /// The measured matrix datacenters sit on, with its site labels.
    pub matrix: Option<Arc<Sites>>,
    /// Effective one-way distance covered per millisecond between
    /// datacenters placed on the map (fibre at 200 km/ms, halved for the
    /// detours routes take).
    pub km_per_ms: f64,
}

impl Default for LatencyModel {
    fn default() -> Self {
        LatencyModel {
            intra_dc: Dist::Const(Duration::from_millis(1)),
            inter_dc: Duration::from_millis(50),
            jitter: Dist::default(),
            loss: 0.0,
            bandwidth: DEFAULT_BANDWIDTH,
            duplicate: 0.0,
            reorder: 0.0,
            matrix: None,
            km_per_ms: 100.0,
        }
    }
}

/// A latency matrix with its site table (`NAME.nodes.csv`: `id,label`,
/// optionally `lat,lon`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sites {
    /// The pairwise RTTs.
    pub matrix: Matrix,
    /// `labels[id]`, where the site table has one.
    pub labels: Vec<Option<String>>,
    /// `geo[id]` = (lat, lon), where the site table has them.
    pub geo: Vec<Option<(f64, f64)>>,
}

impl Sites {
    /// Loads a matrix and, if it exists, the site table beside it.
    pub fn load(path: &Path) -> Result<Sites, String> {
        let matrix = Matrix::load(path).map_err(|e| e.to_string())?;
        let n = matrix.nodes as usize;
        let mut sites = Sites {
            matrix,
            labels: vec![None; n],
            geo: vec![None; n],
        };
        let table = path.with_extension("nodes.csv");
        if let Ok(text) = std::fs::read_to_string(&table) {
            sites.read_table(&table.display().to_string(), &text)?;
        }
        Ok(sites)
    }

    fn read_table(&mut self, origin: &str, text: &str) -> Result<(), String> {
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.next() else {
            return Ok(());
        };
        let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
        let col = |c: &str| cols.iter().position(|h| h == c);
        let (Some(iid), label) = (col("id"), col("label")) else {
            return Err(format!("{origin}:1: the site table needs an id column"));
        };
        let (lat, lon) = (col("lat"), col("lon"));
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let id: usize = f
                .get(iid)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{origin}:{}: bad site id", i + 1))?;
            if id >= self.labels.len() {
                continue;
            }
            if let Some(l) = label.and_then(|c| f.get(c)) {
                self.labels[id] = Some((*l).to_owned());
            }
            let num = |c: Option<usize>| c.and_then(|c| f.get(c)?.parse::<f64>().ok());
            if let (Some(a), Some(o)) = (num(lat), num(lon)) {
                if (-90.0..=90.0).contains(&a) && (-180.0..=180.0).contains(&o) {
                    self.geo[id] = Some((a, o));
                }
            }
        }
        Ok(())
    }

    /// The row whose label is `name` (case-insensitive).
    pub fn find(&self, name: &str) -> Option<u32> {
        self.labels
            .iter()
            .position(|l| l.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(name)))
            .map(|i| i as u32)
    }
}

/// Great-circle distance in kilometres.
pub fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// An `n`×`n` symmetric table with `f(i, j)` above the diagonal (visited
/// row by row, so draws from an RNG are reproducible) and zero on it.
fn symmetric(
    n: usize,
    mut f: impl FnMut(usize, usize) -> Result<Duration, String>,
) -> Result<Vec<Vec<Duration>>, String> {
    let mut t = vec![vec![Duration::ZERO; n]; n];
    for (i, j) in (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))) {
        let v = f(i, j)?;
        t[i][j] = v;
        t[j][i] = v;
    }
    Ok(t)
}

/// The whole simulated world: datacenters, nodes and the network model.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Datacenters, in file order.
    pub datacenters: Vec<Datacenter>,
    /// Nodes: each datacenter's servers, then its clients.
    pub nodes: Vec<NodeSpec>,
    /// Which nodes gossip with which.
    pub pool: PoolScope,
    /// How the network behaves.
    pub latency: LatencyModel,
}

/// A concrete network drawn from the model: the one-way latency, loss
/// rate and bandwidth of every pair of nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Links {
    /// `one_way[i][j]`, symmetric.
    pub one_way: Vec<Vec<Duration>>,
    /// `loss[i][j]`, symmetric.
    pub loss: Vec<Vec<f64>>,
    /// `bandwidth[i][j]`, bytes per second each way.
    pub bandwidth: Vec<Vec<f64>>,
}

impl Links {
    /// The model's round-trip time between nodes `i` and `j`, in ms: what
    /// coordinates are scored against.
    pub fn rtt_ms(&self, i: usize, j: usize) -> f64 {
        self.one_way[i][j].as_secs_f64() * 2000.0
    }
}

impl Topology {
    /// A single datacenter `dc` of `clients` clients on uniform 1 ms links.
    pub fn lan(dc: &str, clients: usize) -> Topology {
        Topology::new(
            vec![Datacenter {
                name: dc.into(),
                clients,
                servers: 0,
                location: Location::Unplaced,
            }],
            PoolScope::Datacenter,
            LatencyModel::default(),
        )
    }

    /// Names the nodes of `datacenters`: `DC-server-I` for servers,
    /// `DC-I` for clients.
    pub fn new(datacenters: Vec<Datacenter>, pool: PoolScope, latency: LatencyModel) -> Topology {
        let mut nodes = Vec::new();
        for (d, dc) in datacenters.iter().enumerate() {
            for i in 0..dc.servers {
                nodes.push(NodeSpec {
                    name: format!("{}-server-{i}", dc.name),
                    dc: d,
                    role: Role::Server,
                });
            }
            for i in 0..dc.clients {
                nodes.push(NodeSpec {
                    name: format!("{}-{i}", dc.name),
                    dc: d,
                    role: Role::Client,
                });
            }
        }
        Topology {
            datacenters,
            nodes,
            pool,
            latency,
        }
    }

    /// Node names, in order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The index of the node called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        // Names follow `new`'s pattern, so the index is computed from the
        // name and then verified: a lookup per member event at 100,000
        // nodes cannot afford a scan. Renamed nodes still fall back to one.
        self.index_by_pattern(name)
            .or_else(|| self.nodes.iter().position(|n| n.name == name))
    }

    fn index_by_pattern(&self, name: &str) -> Option<usize> {
        let (prefix, number) = name.rsplit_once('-')?;
        let k: usize = number.parse().ok()?;
        let mut offset = 0;
        for dc in &self.datacenters {
            let at = if prefix.strip_suffix("-server") == Some(dc.name.as_str()) && k < dc.servers {
                Some(offset + k)
            } else if prefix == dc.name && k < dc.clients {
                Some(offset + dc.servers + k)
            } else {
                None
            };
            if let Some(i) = at.filter(|&i| self.nodes.get(i).is_some_and(|n| n.name == name)) {
                return Some(i);
            }
            offset += dc.servers + dc.clients;
        }
        None
    }

    /// The gossip pool of node `i`: nodes in one pool gossip together.
    pub fn pool_of(&self, i: usize) -> usize {
        match self.pool {
            PoolScope::Datacenter => self.nodes[i].dc,
            PoolScope::Global => 0,
        }
    }

    /// Where node `i` joins (and rejoins after a restart), as an operator's
    /// `retry_join` list would say: the first two nodes of its own
    /// datacenter (so the first has somewhere to go back to), and the first
    /// node of the pool's first two other datacenters. A few seeds, not
    /// every datacenter: in a pool of hundreds of datacenters, joining
    /// through all of them would cost a state exchange each.
    pub fn join_targets(&self, i: usize) -> Vec<String> {
        let pool = self.pool_of(i);
        let own = self.nodes[i].dc;
        let mut out = Vec::new();
        let mut own_taken = 0;
        let mut others: Vec<usize> = Vec::new();
        for (j, n) in self.nodes.iter().enumerate() {
            if self.pool_of(j) != pool {
                continue;
            }
            if n.dc == own {
                if own_taken < 2 {
                    own_taken += 1;
                    if j != i {
                        out.push(n.name.clone());
                    }
                }
            } else if others.len() < 2 && !others.contains(&n.dc) {
                others.push(n.dc);
                out.push(n.name.clone());
            }
        }
        out
    }

    /// Whether servers of different datacenters federate: two or more
    /// datacenters have servers, and then every server joins the WAN pool.
    pub fn federated(&self) -> bool {
        self.datacenters.iter().filter(|d| d.servers > 0).count() >= 2
    }

    /// Where server `i` joins the WAN pool (as `retry_join_wan` would
    /// say): the first server of its own datacenter and of every other
    /// one. Empty for clients, and when the datacenters do not federate.
    pub fn wan_join_targets(&self, i: usize) -> Vec<String> {
        if self.nodes[i].role != Role::Server || !self.federated() {
            return Vec::new();
        }
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for (j, n) in self.nodes.iter().enumerate() {
            if n.role == Role::Server && !seen.contains(&n.dc) {
                seen.push(n.dc);
                if j != i {
                    out.push(n.name.clone());
                }
            }
        }
        out
    }

    /// One-way latency between datacenters `a` and `b` (not equal).
    pub fn inter_dc(&self, a: usize, b: usize) -> Result<Duration, String> {
        let (da, db) = (&self.datacenters[a], &self.datacenters[b]);
        let geo = |dc: &Datacenter| -> Option<(f64, f64)> {
            match dc.location {
                Location::Geo { lat, lon } => Some((lat, lon)),
                Location::Row(r) => self.latency.matrix.as_ref()?.geo.get(r as usize).copied()?,
                Location::Unplaced => None,
            }
        };
        let ms = match (&da.location, &db.location) {
            (Location::Unplaced, _) | (_, Location::Unplaced) => {
                return Ok(self.latency.inter_dc);
            }
            (Location::Row(x), Location::Row(y)) if x == y => {
                return Ok(self.latency.intra_dc.mean());
            }
            (Location::Row(x), Location::Row(y)) => {
                let m = self
                    .latency
                    .matrix
                    .as_ref()
                    .ok_or("rows need latency.matrix")?;
                m.matrix.rtt_ms(*x, *y).ok_or_else(|| {
                    format!(
                        "{} has no RTT between rows {x} ({}) and {y} ({}); pick rows measured against each other",
                        m.matrix.name, da.name, db.name
                    )
                })? / 2.0
            }
            _ => {
                let (Some(ga), Some(gb)) = (geo(da), geo(db)) else {
                    return Err(format!(
                        "datacenters {} and {} are placed differently and one has no lat/lon in the site table: place every datacenter on a matrix row or every one at coordinates",
                        da.name, db.name
                    ));
                };
                great_circle_km(ga, gb) / self.latency.km_per_ms
            }
        };
        Duration::try_from_secs_f64(ms / 1000.0).map_err(|e| e.to_string())
    }

    /// One-way latency between datacenters, `[a][b]` (zero on the diagonal).
    pub fn dc_latencies(&self) -> Result<Vec<Vec<Duration>>, String> {
        symmetric(self.datacenters.len(), |a, b| self.inter_dc(a, b))
    }

    /// The model's one-way latency between nodes `i` and `j` in a run with
    /// `seed`, given `between` from [`dc_latencies`](Self::dc_latencies). A
    /// link inside a datacenter is drawn from `intra_dc` by a generator
    /// seeded with the pair alone, so any pair can be asked for at any time
    /// (the protocol engine never holds all N² of them) and always gets the
    /// same answer.
    pub fn link_one_way(
        &self,
        seed: u64,
        between: &[Vec<Duration>],
        i: usize,
        j: usize,
    ) -> Duration {
        let (a, b) = (self.nodes[i].dc, self.nodes[j].dc);
        let d = if a != b {
            between[a][b]
        } else if let Dist::Const(d) = self.latency.intra_dc {
            d
        } else {
            let (lo, hi) = (i.min(j) as u64, i.max(j) as u64);
            let pair_seed = derive_seed(seed, "link", lo << 32 | hi, "intra-dc");
            self.latency.intra_dc.sample(&mut SplitMix(pair_seed))
        };
        // A link never takes less than a microsecond: no network delivers
        // at once.
        d.max(Duration::from_micros(1))
    }

    /// Draws every link's latency and loss from the model, reproducibly
    /// from `seed`.
    pub fn realize(&self, seed: u64) -> Result<Links, String> {
        let n = self.nodes.len();
        let between = self.dc_latencies()?;
        let one_way = symmetric(n, |i, j| Ok(self.link_one_way(seed, &between, i, j)))?;
        let mut loss = vec![vec![self.latency.loss; n]; n];
        for (i, row) in loss.iter_mut().enumerate() {
            row[i] = 0.0;
        }
        let bandwidth = vec![vec![self.latency.bandwidth; n]; n];
        Ok(Links {
            one_way,
            loss,
            bandwidth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn index_finds_every_node_and_nothing_else() {
        let dc = |name: &str, servers, clients| Datacenter {
            name: name.into(),
            clients,
            servers,
            location: Location::Unplaced,
        };
        // "x-server" as a datacenter makes "x-server-0" name two nodes;
        // the lookup must answer as a scan does, with the first.
        let mut t = Topology::new(
            vec![dc("x", 3, 2), dc("x-server", 1, 4), dc("dc-2", 0, 12)],
            PoolScope::Global,
            LatencyModel::default(),
        );
        t.nodes[5].name = "renamed".into();
        for n in &t.nodes {
            let first = t.nodes.iter().position(|m| m.name == n.name);
            assert_eq!(t.index(&n.name), first, "{}", n.name);
        }
        assert_eq!(t.index("x-server-0"), Some(0));
        assert_eq!(t.index("renamed"), Some(5));
        for absent in ["x-9", "dc-2-12", "x-server-4", "x-", "-1", "", "x-01"] {
            assert_eq!(t.index(absent), None, "{absent}");
        }
    }

    #[test]
    fn distributions_stay_in_range_and_near_their_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ms = Duration::from_millis;
        for d in [
            Dist::Const(ms(3)),
            Dist::Uniform {
                min: ms(1),
                max: ms(5),
            },
            Dist::Normal {
                mean: ms(3),
                stddev: ms(1),
            },
            Dist::Exponential { mean: ms(3) },
        ] {
            let draws: Vec<f64> = (0..20_000)
                .map(|_| d.sample(&mut rng).as_secs_f64() * 1000.0)
                .collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            assert!((mean - 3.0).abs() < 0.1, "{d:?}: mean {mean}");
            assert!(draws.iter().all(|v| *v >= 0.0), "{d:?}");
            if let Dist::Uniform { .. } = d {
                assert!(draws.iter().all(|v| (1.0..=5.0).contains(v)));
            }
        }
    }

    #[test]
    fn great_circle_matches_known_distances() {
        // Paris to New York is about 5,840 km.
        let km = great_circle_km((48.8566, 2.3522), (40.7128, -74.0060));
        assert!((km - 5837.0).abs() < 30.0, "{km}");
        assert_eq!(great_circle_km((10.0, 10.0), (10.0, 10.0)), 0.0);
    }

    #[test]
    fn nodes_are_named_by_datacenter_and_role() {
        let dc = |name: &str, servers, clients| Datacenter {
            name: name.into(),
            clients,
            servers,
            location: Location::Unplaced,
        };
        let t = Topology::new(
            vec![dc("a", 1, 2), dc("b", 0, 1)],
            PoolScope::Global,
            LatencyModel::default(),
        );
        assert_eq!(t.names(), ["a-server-0", "a-0", "a-1", "b-0"]);
        assert_eq!(t.join_targets(0), ["a-0", "b-0"]);
        assert_eq!(t.join_targets(2), ["a-server-0", "a-0", "b-0"]);
        let many = Topology::new(
            (0..5).map(|k| dc(&format!("d{k}"), 0, 3)).collect(),
            PoolScope::Global,
            LatencyModel::default(),
        );
        // d2-1: its own first two, and the first of d0 and d1.
        assert_eq!(many.join_targets(7), ["d0-0", "d1-0", "d2-0"]);
        let links = t.realize(1).unwrap();
        assert_eq!(links.one_way[0][1], Duration::from_millis(1));
        assert_eq!(links.one_way[0][3], Duration::from_millis(50));
        assert_eq!(links, t.realize(1).unwrap());
    }
}
