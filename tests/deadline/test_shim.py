"""The Deadline API shim: events, FailRender, getters, stdout handling, repository, path mapping."""
from __future__ import annotations

from pathlib import Path

import pytest

from Deadline.Plugins import DeadlinePlugin, FailRenderException, PluginType
from Deadline.Plugins import PluginContext
from Deadline.Scripting import FileUtils, NoRepositoryError, RepositoryUtils, install_backend

from atomic_publish.deadline_plugin.farm.backend import FarmBackend, parse_path_mapping
from atomic_publish.deadline_plugin.farm.jobmodel import build_job_record
from atomic_publish.deadline_plugin.farm.state import FarmState
from atomic_publish.deadline_plugin.jobfiles import KeyValueFile


class Sample(DeadlinePlugin):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.InitializeProcessCallback += self.InitializeProcess
        self.RenderExecutableCallback += lambda: "/bin/first"
        self.RenderExecutableCallback += lambda: "/bin/last"

    def InitializeProcess(self) -> None:
        self.StdoutHandling = True
        self.AddStdoutHandlerCallback(r"progr: +([0-9.]+)%").HandleCallback += self.Progress
        self.AddStdoutHandlerCallback(r"([0-9.]+)%").HandleCallback += lambda: self.calls.append("any%")
        self.AddStdoutHandlerCallback(r"secret").HandleCallback += self.SuppressThisLine

    def Progress(self) -> None:
        self.SetProgress(float(self.GetRegexMatch(1)))
        self.calls.append(self.GetRegexMatch(0))


def bound(plugin: DeadlinePlugin, log: list[str], **info: str) -> DeadlinePlugin:
    plugin._bind_context(PluginContext(job=None, task=None, slave_name="w", jobs_data_directory="/j",
                                       plugin_directory="/p", plugin_info=dict(info),
                                       config={"Exe": "/a;/b", "On": "TRUE"}, log=log.append))
    return plugin


def test_events_attach_with_plus_equals_and_del_detaches() -> None:
    plugin = Sample()
    assert plugin.PluginType == PluginType.Simple and plugin.plugin_initialized
    assert plugin.RenderExecutableCallback() == "/bin/last"  # multicast: last handler's value
    del plugin.RenderExecutableCallback
    assert plugin.RenderExecutableCallback() is None and not plugin.RenderExecutableCallback
    del plugin.RenderExecutableCallback  # twice is harmless, as in Cleanup after Cleanup
    with pytest.raises(TypeError, match="is an event"):
        plugin.InitializeProcessCallback = lambda: None


def test_stdout_handlers_search_unanchored_all_fire_and_suppress() -> None:
    log: list[str] = []
    plugin = bound(Sample(), log)
    plugin.InitializeProcessCallback()
    assert plugin._handle_stdout_line("frame 3 progr:  12.5% rendered") is False
    assert plugin._ctx.progress == 12.5
    assert plugin.calls == ["progr:  12.5%", "any%"]
    assert plugin._handle_stdout_line("the secret line") is True
    handler = plugin.StdoutHandlers[0]
    del handler.HandleCallback
    plugin._handle_stdout_line("progr: 50% rendered")
    assert plugin._ctx.progress == 12.5


def test_fail_render_raises() -> None:
    with pytest.raises(FailRenderException, match="boom"):
        Sample().FailRender("boom")


def test_getters_like_deadline() -> None:
    log: list[str] = []
    plugin = bound(Sample(), log, Manifest="/m.json", Count="3", Flag="False")
    assert plugin.GetPluginInfoEntry("manifest") == "/m.json"
    with pytest.raises(KeyError, match="Missing"):
        plugin.GetPluginInfoEntry("Missing")
    assert plugin.GetPluginInfoEntryWithDefault("Missing", "d") == "d"
    assert plugin.GetIntegerPluginInfoEntry("Count") == 3
    assert plugin.GetBooleanPluginInfoEntry("Flag") is False
    assert plugin.GetBooleanPluginInfoEntryWithDefault("Missing", True) is True
    with pytest.raises(ValueError):
        plugin.GetBooleanPluginInfoEntry("Count")
    assert plugin.GetBooleanConfigEntry("On") is True
    assert plugin.GetConfigEntryWithDefault("Nope", "x") == "x"
    plugin.SetProcessEnvironmentVariable("KEY", "VAL")
    assert log == ["INFO: Setting Process Environment Variable KEY to VAL"]
    assert plugin.GetProcessEnvironmentVariable("KEY") == "VAL"
    plugin.LogWarning("careful")
    assert log[-1] == "WARNING: careful"


def test_repository_utils_without_a_farm_raise_clearly() -> None:
    install_backend(None)
    with pytest.raises(NoRepositoryError, match="atomic-publish farm"):
        RepositoryUtils.GetJob("x", True)


def test_search_file_list(tmp_path: Path) -> None:
    exe = tmp_path / "b"
    exe.write_text("")
    assert FileUtils.SearchFileList(f"{tmp_path}/a; {exe} ;{tmp_path}") == str(exe)
    assert FileUtils.SearchFileList(f"{tmp_path}/a;") == ""


@pytest.fixture
def farm_backend(tmp_path: Path):
    state = FarmState.create(tmp_path / "farm", {"bad_worker_errors": 3})
    record = build_job_record(KeyValueFile([("Plugin", "AtomicPublish"), ("Whitelist", "w1,w2")]),
                              KeyValueFile([("Manifest", "/m")]), job_id="job1")
    state.add_job(record)
    env = {"ATOMIC_PUBLISH_FARM_PATH_MAPPING": "/x/projects=>/x/offline/projects;/Mnt/A=>/b"}
    install_backend(FarmBackend(state, "w1", log=lambda line: None, environ=env))
    yield state
    install_backend(None)


def test_path_mapping_prefix_and_case_sensitive(farm_backend: FarmState, tmp_path: Path) -> None:
    assert RepositoryUtils.CheckPathMapping("/x/projects/show/a.exr") == "/x/offline/projects/show/a.exr"
    assert RepositoryUtils.CheckPathMapping("/y/x/projects/a") == "/y/x/projects/a"  # prefix only
    assert RepositoryUtils.CheckPathMapping("/mnt/A/file") == "/mnt/A/file"  # case-sensitive on posix
    assert RepositoryUtils.PathMappingRequired("/Mnt/A/file")
    source = tmp_path / "in.json"
    source.write_text('{"a": "/x/projects/s", "b": ["/x/projects/t"]}')
    RepositoryUtils.CheckPathMappingInFile(str(source), str(tmp_path / "out.json"))
    assert (tmp_path / "out.json").read_text() == '{"a": "/x/offline/projects/s", "b": ["/x/offline/projects/t"]}'


def test_path_mapping_syntax_errors() -> None:
    assert parse_path_mapping("") == []
    with pytest.raises(ValueError, match="FROM=>TO"):
        parse_path_mapping("/a->/b")


def test_repository_utils_act_on_the_farm_state(farm_backend: FarmState) -> None:
    job = RepositoryUtils.GetJob("job1", True)
    assert job.JobWhitelistFlag and job.JobListedSlaves == ["w1", "w2"] and job.JobStatus == "Active"
    RepositoryUtils.RemoveSlavesFromMachineLimitList("job1", ["w1"])
    RepositoryUtils.SetMachineLimitWhiteListFlag("job1", False)
    RepositoryUtils.AddSlavesToMachineLimitList("job1", ["w3"])
    job = RepositoryUtils.GetJob("job1", True)
    assert not job.JobWhitelistFlag and job.JobListedSlaves == ["w2", "w3"]
    job.SetJobExtraInfoKeyValue("Note", "x")
    RepositoryUtils.SaveJob(job)
    assert RepositoryUtils.GetJob("job1").GetJobExtraInfoKeyValueWithDefault("note", "") == "x"
    RepositoryUtils.FailJob(job)
    job = RepositoryUtils.GetJob("job1")
    assert job.JobStatus == "Failed" and job.JobFailedTasks == 1
    assert RepositoryUtils.GetJobReports("job1").GetErrorReports() == []
