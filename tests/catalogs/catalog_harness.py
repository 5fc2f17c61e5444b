"""One harness per catalogue backend, so that the contract tests run the same scenarios on each
(as Powertools runs the same handlers against both its persistence layers).

* memory: ``testing/memory_catalog.py``;
* openpype: MongoDB documents on the SecantusDB server ``tests/conftest.py`` starts;
* ayon: the local AYON server (``testing/fake_ayon``) through the real ``ayon-python-api`` client.

Each harness knows how the outside world makes a version (another client's publish), how to
count what is visible, and how to make its server unreachable.
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from pathlib import Path

from atomic_publish.wrapper.catalogs.base import PublishedFile, Representation, Subject, VersionEntry

PROJECT, CODE = "proj", "pj"
HIERARCHY = "sq01"
COMMITTED = dt.datetime(2026, 12, 1, 7, 10, 17, 495000, dt.timezone.utc)
API_KEY = "ak-" + "5e1d9c3b" * 6


def subject(asset: str = "sh010", subset: str = "renderMain", task: str | None = "comp",
            family: str = "render") -> Subject:
    return Subject(PROJECT, CODE, asset, HIERARCHY, subset, family, task)


def entry(key: str, subj: Subject, number: int, root: Path, id_parts: tuple[str, ...] | None = None,
          frames: tuple[int, ...] = (1001, 1002), write_files: bool = False) -> VersionEntry:
    """An entry whose files live under ``root`` (the project's ``work`` root), as the commit leaves them."""
    final_dir = root / PROJECT / HIERARCHY / subj.asset / "publish" / subj.family / subj.subset / f"v{number:03d}"
    files = []
    for frame in frames:
        name = f"{CODE}_{subj.asset}_{subj.subset}_v{number:03d}.{frame}.exr"
        path = final_dir / name
        if write_files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"exr" * frame)
        files.append(PublishedFile(name=name, path=str(path), rootless="{root[work]}/" + str(path.relative_to(root)),
                                   size=3 * frame, hash=f"{frame:032x}", hash_type="xxh3_128", frame=str(frame)))
    context = {"root": {"work": {"linux": str(root)}}, "project": {"name": PROJECT, "code": CODE},
               "asset": subj.asset, "hierarchy": HIERARCHY, "task": subj.task, "subset": subj.subset,
               "family": subj.family, "version": number, "representation": "exr", "ext": "exr",
               "username": "alice", "frame": str(frames[0])}
    rep = Representation(name="exr", ext="exr", files=tuple(files), template="{root[work]}/{project[name]}/v{version}",
                         context=context, data_path=files[0].path,
                         data={"colorspaceData": {"colorspace": "ACES - ACEScg"}})
    return VersionEntry(key=key, id_parts=id_parts or (key,), subject=subj, number=number, job_id="job1",
                        task_id="0", fingerprint="sha256:" + "0" * 64, author="alice", comment="comp v1",
                        source="{root[work]}/proj/work/comp.nk", committed_at=COMMITTED, frame_start=frames[0],
                        frame_end=frames[-1], roots={"work": {"linux": str(root)}}, final_dir=str(final_dir),
                        representations=(rep,), machine="render-07",
                        data={"fps": 24.0, "resolutionWidth": 2048, "resolutionHeight": 1152, "handleStart": 0,
                              "handleEnd": 0, "host_name": "nuke"})


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: nothing listens there


class MemoryHarness:
    name = "memory"

    def __init__(self, tmp_path: Path):
        from atomic_publish.testing.memory_catalog import MemoryCatalog

        self.root = tmp_path / "work"
        self.catalog = MemoryCatalog(require_folders={PROJECT: ["/sq01/sh010", "/sq01/sh020"]})

    def foreign(self, subj: Subject, number: int, active: bool = True) -> None:
        self.catalog.add_foreign_version(subj, number, active)

    def versions(self, subj: Subject) -> list[tuple[int, str]]:
        return [(n, k) for n, k, _active in self.catalog.visible(subj)]

    def entities(self) -> int:
        c = self.catalog
        return len(c.products) + len(c.versions) + len(c.representations)

    def down(self):
        from atomic_publish.testing.memory_catalog import MemoryCatalog

        catalog = MemoryCatalog()
        catalog.down = True
        return catalog

    def close(self) -> None:
        pass


class OpenPypeHarness:
    name = "openpype"

    def __init__(self, tmp_path: Path, mongo_uri: str):
        import pymongo

        from atomic_publish.wrapper.catalogs.openpype import OpenPypeCatalog

        self.root = tmp_path / "work"
        self.client = pymongo.MongoClient(mongo_uri, tz_aware=True)
        self.database = f"avalon_{uuid.uuid4().hex[:10]}"
        self.catalog = OpenPypeCatalog(self.client, self.database)

    @property
    def col(self):
        return self.client[self.database][PROJECT]

    def foreign(self, subj: Subject, number: int, active: bool = True) -> None:
        """A version OpenPype itself published (random ObjectIds, no atomic-publish marker)."""
        from bson import ObjectId

        col = self.col
        asset = col.find_one({"type": "asset", "name": subj.asset})
        if asset is None:
            asset = {"_id": ObjectId(), "type": "asset", "name": subj.asset, "data": {"parents": [HIERARCHY]}}
            col.insert_one(asset)
        subset = col.find_one({"type": "subset", "name": subj.subset, "parent": asset["_id"]})
        if subset is None:
            subset = {"_id": ObjectId(), "type": "subset", "name": subj.subset, "parent": asset["_id"],
                      "data": {"family": subj.family}}
            col.insert_one(subset)
        col.insert_one({"_id": ObjectId(), "type": "version", "name": number, "parent": subset["_id"],
                        "data": {"author": "artist"}})

    def versions(self, subj: Subject) -> list[tuple[int, str]]:
        asset = self.col.find_one({"type": "asset", "name": subj.asset})
        subset = asset and self.col.find_one({"type": "subset", "name": subj.subset, "parent": asset["_id"]})
        if not subset:
            return []
        return sorted((d["name"], (d.get("data") or {}).get("atomic_publish", {}).get("key", ""))
                      for d in self.col.find({"type": "version", "parent": subset["_id"]}))

    def entities(self) -> int:
        return self.col.count_documents({"type": {"$in": ["subset", "version", "representation"]}})

    def down(self):
        import pymongo

        from atomic_publish.wrapper.catalogs.openpype import OpenPypeCatalog

        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{dead_port()}/", serverSelectionTimeoutMS=300,
                                     connectTimeoutMS=300)
        return OpenPypeCatalog(client, self.database)

    def close(self) -> None:
        self.client.drop_database(self.database)
        self.client.close()


class AyonHarness:
    name = "ayon"

    def __init__(self, tmp_path: Path):
        import ayon_api

        from atomic_publish.testing.fake_ayon import FakeAyonServer
        from atomic_publish.wrapper.catalogs.ayon import AyonCatalog

        self.root = tmp_path / "work"
        self.root.mkdir(parents=True, exist_ok=True)
        self.server = FakeAyonServer(tmp_path / "ayon", api_key=API_KEY).__enter__()
        roots = {"work": {"linux": str(self.root), "windows": "P:/projects", "darwin": "/Volumes/projects"}}
        self.ids = self.server.seed(PROJECT, folders=["sq01/sh010", "sq01/sh020"], tasks=["comp"], code=CODE,
                                    roots=roots)
        self.catalog = AyonCatalog(self.server.url, API_KEY, timeout=5)
        self.con = ayon_api.ServerAPI(self.server.url, token=API_KEY, timeout=5)

    def foreign(self, subj: Subject, number: int, active: bool = True) -> None:
        """A version another AYON client made (an artist's publish): random ids, no marker."""
        from ayon_api.operations import OperationsSession, new_product_entity, new_version_entity

        folder = self.con.get_folder_by_path(PROJECT, subj.folder_path)
        product = self.con.get_product_by_name(PROJECT, subj.subset, folder["id"])
        session = OperationsSession(con=self.con)
        if product is None:
            product = new_product_entity(subj.subset, subj.family, folder["id"])
            session.create_entity(PROJECT, "product", product)
        version = new_version_entity(number, product["id"], attribs={"comment": "artist publish"})
        version["active"] = active
        session.create_entity(PROJECT, "version", version)
        session.commit()

    def versions(self, subj: Subject) -> list[tuple[int, str]]:
        folder = self.con.get_folder_by_path(PROJECT, subj.folder_path)
        product = self.con.get_product_by_name(PROJECT, subj.subset, folder["id"]) if folder else None
        if product is None:
            return []
        return sorted((v["version"], ((v.get("data") or {}).get("atomic_publish") or {}).get("key", ""))
                      for v in self.con.get_versions(PROJECT, product_ids=[product["id"]], active=None))

    def entities(self) -> int:
        return sum(len(self.server.entities(PROJECT, t)) for t in ("product", "version", "representation"))

    def down(self):
        from atomic_publish.wrapper.catalogs.ayon import AyonCatalog

        return AyonCatalog(f"http://127.0.0.1:{dead_port()}", API_KEY, timeout=2, max_retries=1)

    def close(self) -> None:
        self.catalog.close()
        self.con.close_session()
        self.server.__exit__(None, None, None)


def harness(name: str, tmp_path: Path, mongo_uri: str | None = None):
    if name == "memory":
        return MemoryHarness(tmp_path)
    if name == "openpype":
        return OpenPypeHarness(tmp_path, mongo_uri)
    return AyonHarness(tmp_path)


def env_without_ayon() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AYON_", "ATOMIC_PUBLISH_"))}
