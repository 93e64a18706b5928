//! The topology page served at `GET /`: one self-contained HTML document (inline CSS and script, no external
//! assets) that draws the tree with each node's level, state, addresses, parent, and topics' end offsets and lag.
//!
//! The server renders the tree once so the page works without script; the inline script then re-fetches
//! `api/v1/topology` every few seconds and redraws it with the same markup. This module owns only that markup.

use std::fmt::Write;

use crate::model::{Node, NodeState, TopologyView, TreeNode};

/// How often the page refreshes itself, in milliseconds.
pub const REFRESH_MS: u64 = 3_000;

/// Renders the whole page for `view`, with heartbeat ages measured from `now_ms`.
pub fn render(view: &TopologyView, now_ms: u64) -> String {
    let mut tree = String::new();
    render_forest(&mut tree, &view.roots, now_ms);
    let alive = view.nodes.iter().filter(|node| node.state == NodeState::Alive).count();
    let summary = format!("{} nodes, {alive} alive, {} expired", view.nodes.len(), view.nodes.len() - alive);
    // The tree goes in last, so that text inside it is never taken for a placeholder.
    PAGE.replace("{{REFRESH_MS}}", &REFRESH_MS.to_string())
        .replace("{{SUMMARY}}", &escape(&summary))
        .replace("{{TREE}}", &tree)
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn render_forest(out: &mut String, trees: &[TreeNode], now_ms: u64) {
    if trees.is_empty() {
        return;
    }
    out.push_str("<ul class=\"tree\">");
    for tree in trees {
        out.push_str("<li>");
        render_card(out, &tree.node, now_ms);
        render_forest(out, &tree.children, now_ms);
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

// `write!` into a `String` cannot fail, so its results are ignored throughout.
fn render_card(out: &mut String, node: &Node, now_ms: u64) {
    let state = node.state.as_str();
    let _ = write!(
        out,
        "<div class=\"node {state}\"><div class=\"head\"><span class=\"level l{depth}\">{level}</span> \
         <b class=\"id\">{id}</b> <span class=\"state\">{state}</span></div>",
        depth = node.level.as_u8(),
        level = node.level.as_str(),
        id = escape(&node.id),
    );
    let tcp = node.tcp_addr.as_deref().unwrap_or("-");
    let _ = write!(out, "<div>http {} &middot; tcp {}</div>", escape(&node.http_addr), escape(tcp));
    let parent = node.parent.as_deref().unwrap_or("none");
    let _ = write!(out, "<div>parent {}", escape(parent));
    if let Some(reported) =
        node.stats.parent.as_deref().filter(|reported| Some(*reported) != node.parent.as_deref())
    {
        let _ = write!(out, " (connected to {})", escape(reported));
    }
    if let Some(broker_state) = &node.stats.state {
        let _ = write!(out, " &middot; {}", escape(broker_state));
    }
    if let Some(consumers) = node.stats.consumers {
        let noun = if consumers == 1 { "consumer" } else { "consumers" };
        let _ = write!(out, " &middot; {consumers} {noun}");
    }
    let age_s = now_ms.saturating_sub(node.last_heartbeat_ms) / 1000;
    let _ = write!(out, " &middot; seen {age_s} s ago</div>");
    if !node.labels.is_empty() {
        let labels: Vec<String> =
            node.labels.iter().map(|(key, value)| format!("{}={}", escape(key), escape(value))).collect();
        let _ = write!(out, "<div class=\"labels\">{}</div>", labels.join(" "));
    }
    if !node.stats.topics.is_empty() {
        out.push_str("<table><tr><th>topic</th><th>end offset</th><th>lag</th></tr>");
        for (topic, stats) in &node.stats.topics {
            let end = stats.end_offset.map_or_else(|| "-".to_owned(), |end| end.to_string());
            let lag = stats.lag.map_or_else(|| "-".to_owned(), |lag| lag.to_string());
            let _ = write!(out, "<tr><td>{}</td><td>{end}</td><td>{lag}</td></tr>", escape(topic));
        }
        out.push_str("</table>");
    }
    out.push_str("</div>");
}

/// The page template. The script's `card` mirrors `render_card` so that refreshes look like the first load.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Relay tree registry</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; background: #fafafa; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
#status { color: #666; margin-bottom: 1rem; }
ul.tree { list-style: none; margin: 0; padding-left: 1.6rem; border-left: 1px dashed #bbb; }
body > #tree > ul.tree { padding-left: 0; border-left: none; }
ul.tree li { margin: .4rem 0; }
.node { display: inline-block; background: #fff; border: 1px solid #ccc; border-left: 5px solid #2a9d4b;
        border-radius: 4px; padding: .35rem .6rem; min-width: 22rem; }
.node.expired { border-left-color: #c0392b; background: #fdf0ef; }
.node .state { font-size: .8rem; color: #2a9d4b; }
.node.expired .state { color: #c0392b; font-weight: bold; }
.level { display: inline-block; min-width: 3.2rem; text-align: center; border-radius: 3px; color: #fff;
         font-size: .75rem; padding: 0 .3rem; }
.l0 { background: #34495e; } .l1 { background: #2980b9; } .l2 { background: #8e44ad; }
.l3 { background: #d35400; } .l4 { background: #16a085; }
.labels { color: #666; font-size: .85rem; }
table { border-collapse: collapse; margin-top: .25rem; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: 0 .4rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
</style>
</head>
<body>
<h1>Relay tree registry</h1>
<div id="status">{{SUMMARY}}</div>
<div id="tree">{{TREE}}</div>
<script>
"use strict";
const esc = (text) => String(text ?? "").replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const DEPTH = {ROOT: 0, L2: 1, L3: 2, POS: 3, LOCAL: 4};
function card(node) {
  const stats = node.stats || {};
  let html = `<div class="node ${esc(node.state)}"><div class="head"><span class="level l${DEPTH[node.level]}">` +
    `${esc(node.level)}</span> <b class="id">${esc(node.id)}</b> <span class="state">${esc(node.state)}</span></div>`;
  html += `<div>http ${esc(node.http_addr)} &middot; tcp ${esc(node.tcp_addr || "-")}</div>`;
  html += `<div>parent ${esc(node.parent || "none")}`;
  if (stats.parent && stats.parent !== node.parent) html += ` (connected to ${esc(stats.parent)})`;
  if (stats.state) html += ` &middot; ${esc(stats.state)}`;
  if (stats.consumers !== undefined) html += ` &middot; ${esc(stats.consumers)} consumer${stats.consumers === 1 ? "" : "s"}`;
  const age = Math.max(0, Math.floor((Date.now() - node.last_heartbeat_ms) / 1000));
  html += ` &middot; seen ${age} s ago</div>`;
  const labels = Object.entries(node.labels || {});
  if (labels.length) html += `<div class="labels">${labels.map(([k, v]) => `${esc(k)}=${esc(v)}`).join(" ")}</div>`;
  const topics = Object.entries(stats.topics || {});
  if (topics.length) {
    html += "<table><tr><th>topic</th><th>end offset</th><th>lag</th></tr>";
    for (const [name, t] of topics) {
      html += `<tr><td>${esc(name)}</td><td>${esc(t.end_offset ?? "-")}</td><td>${esc(t.lag ?? "-")}</td></tr>`;
    }
    html += "</table>";
  }
  return html + "</div>";
}
function forest(trees) {
  if (!trees.length) return "";
  return '<ul class="tree">' + trees.map((t) => "<li>" + card(t) + forest(t.children) + "</li>").join("") + "</ul>";
}
async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("api/v1/topology", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const view = await response.json();
    const alive = view.nodes.filter((n) => n.state === "alive").length;
    document.getElementById("tree").innerHTML = forest(view.roots);
    status.textContent = `${view.nodes.length} nodes, ${alive} alive, ${view.nodes.length - alive} expired` +
      ` (updated ${new Date().toLocaleTimeString()})`;
  } catch (error) {
    status.textContent = "registry unreachable: " + error.message + " (retrying)";
  }
}
setInterval(refresh, {{REFRESH_MS}});
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HeartbeatStats, Level, TopicStats};
    use crate::view;

    fn node(id: &str, level: Level, parent: Option<&str>, state: NodeState) -> Node {
        let mut stats = HeartbeatStats::default();
        stats.topics.insert("prices".into(), TopicStats { end_offset: Some(123), lag: Some(7) });
        Node {
            id: id.to_owned(),
            level,
            labels: [("region".to_owned(), "<eu>".to_owned())].into(),
            http_addr: "127.0.0.1:8081".into(),
            tcp_addr: Some("127.0.0.1:9091".into()),
            preferred_parent: None,
            parent: parent.map(str::to_owned),
            state,
            registered_ms: 0,
            last_heartbeat_ms: 1_000,
            stats,
        }
    }

    #[test]
    fn the_page_shows_every_node_with_its_state_and_topics() {
        let view = view::build(vec![
            node("root", Level::Root, None, NodeState::Alive),
            node("l2-eu", Level::L2, Some("root"), NodeState::Expired),
        ]);
        let html = render(&view, 5_000);
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<b class=\"id\">root</b>"));
        assert!(html.contains("<b class=\"id\">l2-eu</b>"));
        assert!(html.contains("class=\"node expired\""));
        assert!(html.contains("<td>prices</td><td>123</td><td>7</td>"));
        assert!(html.contains("region=&lt;eu&gt;"), "labels are escaped");
        assert!(html.contains("seen 4 s ago"));
        assert!(html.contains("2 nodes, 1 alive, 1 expired"));
        assert!(!html.contains("{{"), "every placeholder is filled");
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no external assets");
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
