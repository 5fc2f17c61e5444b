"""AtomicPublish status: a Deadline Monitor job script (right-click a job > Scripts > AtomicPublishStatus).

Shows the publish records of the selected AtomicPublish jobs: state, version, folder, and every
attempt with its worker and outcome, from `atomic-publish status --job-id <id> --json`. The wrapper
is run the way the job plugin runs it (the AtomicPublish plugin configuration's executable list;
the store URI in a 0600 file, never in the command line). FormatStatus is a pure function, so the
tests check the text through the shim. Standard library, Deadline.* and the Monitor's DeadlineUI.
"""
import json
import os
import shutil
import subprocess
import tempfile

from Deadline.Scripting import *

JOB_PLUGIN = "AtomicPublish"
TIMEOUT_SECONDS = 60
TITLE = "AtomicPublish status"
BEFORE_COMMIT = ("NEW", "RESERVED", "STAGING", "STAGED", "INTEGRATING")


def __main__(*args):
    jobs = MonitorUtils.GetSelectedJobs()
    if not jobs:
        ShowText("Select one or more AtomicPublish jobs first.")
        return
    settings = WrapperSettings(None, JobPluginConfig())
    ShowText("\n\n".join(StatusOfJob(settings, job) for job in jobs))


def IsPublishJob(job):
    return job is not None and (job.JobPlugin or "").strip().lower() == JOB_PLUGIN.lower()


def JobPluginConfig():
    try:
        return RepositoryUtils.GetPluginConfig(JOB_PLUGIN)
    except Exception:
        return None


def StatusOfJob(settings, job):
    """The text for one selected job (runs the wrapper)."""
    title = 'Job %s "%s"' % (job.JobId, job.JobName)
    if not IsPublishJob(job):
        return "%s: not an AtomicPublish job (plugin %s)" % (title, job.JobPlugin)
    code, lines = settings.Run(["status", "--job-id=%s" % job.JobId, "--json"], False, TIMEOUT_SECONDS)
    if code is None:
        return ("%s: no atomic-publish executable on this machine; add its path in Configure Plugins > "
                "AtomicPublish > atomic-publish Executable" % title)
    if code == 0:
        for line in reversed(lines):
            if line.startswith("["):
                return FormatStatus(job.JobId, job.JobName, json.loads(line))
    said = " ".join(line.strip() for line in lines if line.strip()) or "no output"
    if "no record" in said:
        return "%s: no publish record yet (no attempt of this job has started publishing)" % title
    return "%s: atomic-publish status failed (exit %s): %s" % (title, code, said)


def FormatStatus(jobId, jobName, records):
    """The records of `atomic-publish status --json` as text; a rolled-back record shows no version
    or folder as if they existed (its number was released, its folders removed)."""
    lines = ['Job %s "%s": %d publish record(s)' % (jobId, jobName, len(records))]
    for record in sorted(records, key=lambda r: (str(r.get("task_id")), r.get("key"))):
        state = record.get("state") or "?"
        version, folder = DescribePlace(record, state)
        lines.append("")
        lines.append("Task %s  %s" % (record.get("task_id"), record.get("key")))
        lines.append("  state     %s" % state)
        lines.append("  version   %s" % version)
        lines.append("  folder    %s" % folder)
        error = record.get("error") or {}
        if error.get("message") and state in ("ROLLED_BACK", "ROLLING_BACK"):
            lines.append("  reason    %s" % error["message"])
        attempts = record.get("attempts") or []
        lines.append("  attempts  %d" % len(attempts))
        for number, attempt in enumerate(attempts, 1):
            lines.append("    %d. %s" % (number, DescribeAttempt(attempt)))
    return "\n".join(lines)


def DescribePlace(record, state):
    """(version, folder) as they really are in this state."""
    number = record.get("version")
    if number is None:
        number = record.get("released_version")
    name = "v%03d" % number if isinstance(number, int) else None
    if state == "PUBLISHED":
        return name or "?", record.get("final_dir") or "?"
    if state == "COMMITTING":
        return ("%s (committing: the publish rolls forward on its next attempt)" % name,
                "%s (being moved into place)" % record.get("final_dir"))
    if state in ("ROLLED_BACK", "ROLLING_BACK"):
        released = " (%s was released)" % name if name else ""
        done = "removed" if state == "ROLLED_BACK" else "being removed"
        return "none%s" % released, "none (nothing was published; staging %s)" % done
    if name:
        staging = record.get("staging_dir")
        return ("%s (reserved, not published yet)" % name,
                "none yet (staging in %s)" % staging if staging else "none yet")
    return "none yet", "none yet"


def DescribeAttempt(attempt):
    worker = attempt.get("worker") or "?"
    if attempt.get("host"):
        worker = "%s@%s" % (worker, attempt["host"])
    outcome = attempt.get("outcome") or ("running, or crashed" if not attempt.get("end") else "?")
    text = "epoch %s  %s  %s -> %s" % (attempt.get("epoch"), worker, attempt.get("start"), outcome)
    if attempt.get("message"):
        text += ": %s" % attempt["message"]
    return text


def ShowText(text):
    from DeadlineUI.Controls.Scripting.DeadlineScriptDialog import DeadlineScriptDialog

    DeadlineScriptDialog().ShowMessageBox(text, TITLE)


# the AtomicPublish plugin's catalogue entries (its SETTINGS_ENTRIES): `abandon` and `status` must build
# the catalogue `run` published into (docs/ayon-openpype.md); the API key goes in the 0600 secrets file
CATALOG_ENTRIES = (("SettingsFile", "ATOMIC_PUBLISH_SETTINGS"), ("Catalog", "ATOMIC_PUBLISH_CATALOG"),
                   ("AyonServerUrl", "AYON_SERVER_URL"))


class WrapperSettings(object):
    """How to run the wrapper here: the configuration entries (this plugin's own first, then the
    AtomicPublish job plugin's) and the private files that carry the secrets.

    The same class is in scripts/Jobs/AtomicPublishStatus.py; IntegrationSecrets and
    WritePrivateFile are copied from AtomicPublish.py (tests/deadline/test_events.py keeps the copies
    identical: Deadline plugins cannot import each other)."""

    def __init__(self, ownConfig, jobPluginConfig):
        self.ownConfig = ownConfig
        self.jobPluginConfig = jobPluginConfig
        self.privateDirectory = ""

    def GetConfigEntryWithDefault(self, key, default):
        for config in (self.ownConfig, self.jobPluginConfig):
            if config is not None:
                value = config.GetConfigEntryWithDefault(key, "").strip()
                if value:
                    return value
        return default

    def GetJobsDataDirectory(self):
        """A private folder (0700) for the 0600 files: an event or a Monitor script has no job folder."""
        if not self.privateDirectory:
            self.privateDirectory = tempfile.mkdtemp(prefix="atomic-publish-")
        return self.privateDirectory

    def IntegrationSecrets(self):
        """(NAME, VALUE) pairs for the wrapper's environment: ftrack and other integration secrets."""
        pairs = []
        for entry, name in (("FtrackServer", "FTRACK_SERVER"), ("FtrackApiUser", "FTRACK_API_USER"),
                            ("FtrackApiKey", "FTRACK_API_KEY")):
            value = self.GetConfigEntryWithDefault(entry, "").strip()
            if value:
                pairs.append((name, value))
        for item in self.GetConfigEntryWithDefault("IntegrationSecrets", "").split(";"):
            name, sep, value = item.strip().partition("=")
            if sep and name.strip():
                pairs.append((name.strip(), value.strip()))
        return pairs

    def CatalogSecrets(self):
        """(NAME, VALUE) pairs of the catalogue: the AYON API key (AyonApiKey), never in the log."""
        value = self.GetConfigEntryWithDefault("AyonApiKey", "").strip()
        return [("AYON_API_KEY", value)] if value else []

    def WritePrivateFile(self, kind, content):
        """Write ``content`` to a new 0600 file in the private folder; "" when there is nothing to write."""
        if not content:
            return ""
        handle, path = tempfile.mkstemp(prefix="atomic-publish-%s-" % kind, suffix=".txt",
                                        dir=self.GetJobsDataDirectory())
        with os.fdopen(handle, "w") as stream:
            stream.write(content if content.endswith("\n") else content + "\n")
        return path

    def Executable(self):
        """The first atomic-publish executable of the configured list that exists here, or ""."""
        return FileUtils.SearchFileList(self.GetConfigEntryWithDefault("AtomicPublishExecutable", ""))

    def Environment(self, withSecrets):
        """The wrapper's environment: the store URI (and secrets) as 0600 files it reads, never values."""
        environment = dict(os.environ)
        storeFile = self.WritePrivateFile("store", self.GetConfigEntryWithDefault("StoreUri", "").strip())
        if storeFile:
            environment["ATOMIC_PUBLISH_STORE_FILE"] = storeFile
        for entry, variable in CATALOG_ENTRIES:  # not secrets: the studio settings and the catalogue
            value = self.GetConfigEntryWithDefault(entry, "").strip()
            if value:
                environment[variable] = value
        if withSecrets:
            secrets = self.IntegrationSecrets() + self.CatalogSecrets()
            secretsFile = self.WritePrivateFile("secrets", "".join("%s=%s\n" % pair for pair in secrets))
            if secretsFile:
                environment["ATOMIC_PUBLISH_SECRETS_FILE"] = secretsFile
        return environment

    def Run(self, arguments, withSecrets, timeoutSeconds):
        """Run the wrapper; (exit code, output lines). The private files are gone when it returns."""
        executable = self.Executable()
        if not executable:
            return None, []
        try:
            process = subprocess.run([executable, *arguments], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=self.Environment(withSecrets), timeout=timeoutSeconds,
                                     encoding="utf-8", errors="replace")
            return process.returncode, process.stdout.splitlines()
        except subprocess.TimeoutExpired as error:
            output = error.output or ""
            if isinstance(output, bytes):
                output = output.decode("utf-8", "replace")
            return "timeout", output.splitlines()
        finally:
            self.RemovePrivateFiles()

    def RemovePrivateFiles(self):
        if self.privateDirectory:
            shutil.rmtree(self.privateDirectory, ignore_errors=True)
            self.privateDirectory = ""
