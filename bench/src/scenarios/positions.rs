//! Sampling where each node of a chain stands on one topic (a broker's log end, a consumer-app's copy
//! position) over time, and what follows from the samples: lag per hop, records per second per node, and
//! when a node reached an offset. This module reads positions over HTTP; it starts nothing.

use std::time::Instant;

use anyhow::Result;

use crate::api::Api;
use crate::report::HopLag;
use crate::svg::Series;

/// A node whose position is sampled.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Its label in reports (`ROOT`, `L2`, `consumer-app`).
    pub label: String,
    /// Its HTTP base URL.
    pub http: String,
    /// Whether it is a consumer-app (its position comes from its stats) rather than a broker.
    pub is_app: bool,
}

/// One sample of every node.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the sampler's start.
    pub t_s: f64,
    /// Each node's position (the offset after the last record it holds); `None` while it lacks the topic.
    pub positions: Vec<Option<u64>>,
}

/// Samples a chain of nodes, parent first.
#[derive(Debug)]
pub struct PositionSampler {
    /// The topic.
    topic: String,
    /// The nodes, parent first.
    nodes: Vec<Watched>,
    /// Time zero of the samples.
    start: Instant,
    /// Every sample taken.
    samples: Vec<Sample>,
}

impl PositionSampler {
    /// A sampler of `topic` on `nodes` (parent first), timing from `start`.
    pub fn new(topic: &str, nodes: Vec<Watched>, start: Instant) -> PositionSampler {
        PositionSampler { topic: topic.to_string(), nodes, start, samples: Vec::new() }
    }

    /// Reads every node's position now (all at once) and keeps the sample.
    pub async fn sample(&mut self, api: &Api) -> Result<&Sample> {
        let reads = self.nodes.iter().map(|node| position_of(api, node, &self.topic));
        let positions = futures_util::future::try_join_all(reads).await?;
        self.samples.push(Sample { t_s: self.start.elapsed().as_secs_f64(), positions });
        Ok(&self.samples[self.samples.len() - 1])
    }

    /// The lag of each node behind its parent over the samples from `from_t_s` on.
    pub fn hop_lags(&self, from_t_s: f64) -> Vec<HopLag> {
        (1..self.nodes.len())
            .map(|index| {
                let lags: Vec<u64> = self
                    .samples
                    .iter()
                    .filter(|sample| sample.t_s >= from_t_s)
                    .map(|sample| lag(sample, index))
                    .collect();
                HopLag {
                    hop: format!("{} -> {}", self.nodes[index - 1].label, self.nodes[index].label),
                    max_records: lags.iter().copied().max().unwrap_or(0),
                    mean_records: if lags.is_empty() {
                        0.0
                    } else {
                        lags.iter().sum::<u64>() as f64 / lags.len() as f64
                    },
                    final_records: lags.last().copied().unwrap_or(0),
                    samples: lags.len(),
                }
            })
            .collect()
    }

    /// Records per second of each node between consecutive samples.
    pub fn rate_series(&self) -> Vec<Series> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| Series {
                name: node.label.clone(),
                points: self
                    .samples
                    .windows(2)
                    .filter_map(|pair| {
                        let before = pair[0].positions[index]?;
                        let after = pair[1].positions[index]?;
                        let seconds = pair[1].t_s - pair[0].t_s;
                        (seconds > 0.0).then(|| (pair[1].t_s, after.saturating_sub(before) as f64 / seconds))
                    })
                    .collect(),
            })
            .collect()
    }

    /// Each hop's lag over time.
    pub fn lag_series(&self) -> Vec<Series> {
        (1..self.nodes.len())
            .map(|index| Series {
                name: format!("{} -> {}", self.nodes[index - 1].label, self.nodes[index].label),
                points: self.samples.iter().map(|sample| (sample.t_s, lag(sample, index) as f64)).collect(),
            })
            .collect()
    }

    /// The time of the first sample at which node `index` held every record below `offset`.
    pub fn reached_at(&self, index: usize, offset: u64) -> Option<f64> {
        self.samples
            .iter()
            .find(|sample| sample.positions[index].is_some_and(|position| position >= offset))
            .map(|sample| sample.t_s)
    }
}

/// How far node `index` is behind node `index - 1` in `sample`.
fn lag(sample: &Sample, index: usize) -> u64 {
    let parent = sample.positions[index - 1].unwrap_or(0);
    let child = sample.positions[index].unwrap_or(0);
    parent.saturating_sub(child)
}

/// A node's position on `topic`.
async fn position_of(api: &Api, node: &Watched, topic: &str) -> Result<Option<u64>> {
    if node.is_app {
        let stats = api.app_stats(&node.http).await?;
        Ok(stats.topics.get(topic).map(|topic| topic.position))
    } else {
        Ok(api.topic(&node.http, topic).await?.map(|position| position.end_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler_with(samples: Vec<Sample>) -> PositionSampler {
        let node = |label: &str| Watched { label: label.to_string(), http: String::new(), is_app: false };
        let mut sampler =
            PositionSampler::new("t", vec![node("ROOT"), node("L2"), node("L3")], Instant::now());
        sampler.samples = samples;
        sampler
    }

    #[test]
    fn lags_rates_and_arrival_times() {
        let sampler = sampler_with(vec![
            Sample { t_s: 0.0, positions: vec![Some(100), None, None] },
            Sample { t_s: 1.0, positions: vec![Some(300), Some(200), Some(50)] },
            Sample { t_s: 2.0, positions: vec![Some(300), Some(300), Some(300)] },
        ]);
        let lags = sampler.hop_lags(0.0);
        assert_eq!(lags.len(), 2);
        assert_eq!(lags[0].hop, "ROOT -> L2");
        assert_eq!(lags[0].max_records, 100);
        assert_eq!(lags[1].max_records, 150);
        assert_eq!(lags[1].final_records, 0);
        assert!((lags[0].mean_records - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(sampler.hop_lags(1.5)[1].samples, 1);
        let rates = sampler.rate_series();
        assert_eq!(rates[0].points, vec![(1.0, 200.0), (2.0, 0.0)]);
        assert_eq!(rates[2].points, vec![(2.0, 250.0)]);
        assert_eq!(sampler.reached_at(2, 300), Some(2.0));
        assert_eq!(sampler.reached_at(2, 301), None);
        assert_eq!(sampler.lag_series()[0].points.len(), 3);
    }
}
