"""Circuits as graphs: networkx nodes and edges are the circuit's, and GraphML and JSON round-trip."""

import json

import networkx as nx
import pytest
from conftest import randomize, tiny_config

from sparselens import HookedSparseTransformer, NodeMask
from sparselens.model.fingerprint import model_fingerprint
from sparselens.prune import Circuit, EdgeUse, count_edges, count_residual_links, write_graph_json, write_graphml


@pytest.fixture(scope="module")
def model_and_circuit():
    model = randomize(HookedSparseTransformer(tiny_config(n_layers=2, d_model=16, d_head=4, n_ctx=8, d_vocab=32)), seed=5)
    keep = ["L0.attn_in[1]", "L0.attn_in[2]", "L0.q[h0,1]", "L0.k[h0,1]", "L0.v[h1,2]", "L0.attn_out[3]",
            "L1.mlp_in[3]", "L1.neuron[4]", "L1.neuron[6]", "L1.mlp_out[7]"]
    mask = NodeMask.from_nodes(model.node_registry, keep)
    use = EdgeUse(input_ids=(3, 5), target_ids=(7, 9), n_positions=0)
    circuit = Circuit(
        kept={s.name: mask[s.name].nonzero().flatten().tolist() for s in model.node_sites},
        edge_counts=count_edges(model, mask, use), residual_links=count_residual_links(model, mask), task="t",
        target_ids=use.target_ids, input_ids=use.input_ids, n_positions=0, ablation="mean", freeze_norms=False,
        losses={}, model_fingerprint=model_fingerprint(model),
    )
    return model, circuit, keep


def test_graph_nodes_and_edges_are_the_circuits(model_and_circuit):
    model, circuit, keep = model_and_circuit
    graph = circuit.to_networkx(model)
    blocks = [n for n, a in graph.nodes(data=True) if a["kind"] != "token"]
    assert sorted(blocks) == sorted(keep)
    assert graph.nodes["L0.q[h0,1]"] == {"site": "L0.q", "kind": "q", "role": "Q", "layer": 0, "channel": 1, "head": 0}
    assert graph.nodes["L1.neuron[6]"]["channel"] == 6 and graph.nodes["L1.neuron[6]"]["head"] == -1
    kinds = {}
    for _, _, attrs in graph.edges(data=True):
        kinds[attrs["kind"]] = kinds.get(attrs["kind"], 0) + 1
    assert kinds.pop("residual", 0) == circuit.residual_links
    assert kinds == {k: v for k, v in circuit.edge_counts.items() if v}  # no edge collapsed or invented
    for edge in circuit.edges(model):
        assert graph.edges[edge.src, edge.dst]["weight"] == pytest.approx(edge.weight)
    weighted = [a for _, _, a in graph.edges(data=True) if a["kind"] not in ("residual", "q-k")]
    assert weighted and all(a["weight"] != 0 for a in weighted)  # an edge is a nonzero weight
    assert circuit.to_networkx(model, residual_links=False).number_of_edges() == circuit.n_edges


def test_graphml_and_json_round_trip(model_and_circuit, tmp_path):
    model, circuit, _ = model_and_circuit
    graph = circuit.to_networkx(model)
    back = nx.read_graphml(write_graphml(graph, tmp_path / "c.graphml"))
    assert set(back.nodes) == set(graph.nodes) and set(back.edges) == set(graph.edges)
    for name, attrs in graph.nodes(data=True):
        assert back.nodes[name] == attrs
    for src, dst, attrs in graph.edges(data=True):
        assert back.edges[src, dst]["kind"] == attrs["kind"]
        assert back.edges[src, dst]["weight"] == pytest.approx(attrs["weight"])
    doc = json.loads(write_graph_json(graph, tmp_path / "c.json").read_text())
    assert {n["id"] for n in doc["nodes"]} == set(graph.nodes)
    assert {(e["source"], e["target"]) for e in doc["edges"]} == set(graph.edges)
    assert nx.node_link_graph(doc, edges="edges").number_of_edges() == graph.number_of_edges()
