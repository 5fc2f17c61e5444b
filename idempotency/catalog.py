"""What the state store knows about its server's transactions.

The OpenPype documents themselves moved behind the catalogue seam (``wrapper/catalogs/openpype.py``,
issue 15); the state store and the OpenPype backend share this one fact: which topologies commit
multi-document transactions (replica sets and sharded clusters do; a standalone mongod does not;
SecantusDB answers as a replica set).
"""
from __future__ import annotations

TRANSACTION_TOPOLOGIES = ("ReplicaSetWithPrimary", "Sharded", "LoadBalanced")

__all__ = ["TRANSACTION_TOPOLOGIES"]
