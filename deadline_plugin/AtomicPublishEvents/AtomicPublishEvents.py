"""AtomicPublishEvents: Deadline 10 event plugin that rolls back what a failed or deleted publish job left.

A job failed or deleted in Deadline runs no more attempts, so its unfinished publishes would stay
reserved and staged until `atomic-publish gc`. On OnJobFailed and OnJobDeleted of an AtomicPublish
job this plugin runs `atomic-publish abandon --job-id <id>`, which rolls back every unfinished
publish of the job and never touches a COMMITTING or PUBLISHED one (docs/deadline-events.md).
OnJobRequeued changes nothing: a requeued job's next attempts resume or say "already published".

Thin on purpose, like the job plugin: standard library and Deadline.* only, and the wrapper is run
the way the job plugin runs it (same executable list, the store URI and integration secrets in
0600 files, never in the command line or the log). Settings left blank here are read from the
AtomicPublish job plugin's configuration.
"""
import os
import shutil
import subprocess
import tempfile

from Deadline.Events import *
from Deadline.Scripting import *

JOB_PLUGIN = "AtomicPublish"
ABANDON_PREFIX = "[atomic-publish] abandon "
DEFAULT_BUSY_WAIT_SECONDS = 20
DEFAULT_TIMEOUT_SECONDS = 600


def GetDeadlineEventListener():
    return AtomicPublishEventListener()


def CleanupDeadlineEventListener(eventListener):
    eventListener.Cleanup()


def IsPublishJob(job):
    return job is not None and (job.JobPlugin or "").strip().lower() == JOB_PLUGIN.lower()


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


class AtomicPublishEventListener(DeadlineEventListener):
    def __init__(self):
        super().__init__()
        self.OnJobFailedCallback += self.OnJobFailed
        self.OnJobDeletedCallback += self.OnJobDeleted
        self.OnJobRequeuedCallback += self.OnJobRequeued

    def Cleanup(self):
        del self.OnJobFailedCallback
        del self.OnJobDeletedCallback
        del self.OnJobRequeuedCallback

    # -- events ------------------------------------------------------------------------------
    def OnJobFailed(self, job):
        self.Abandon(job, "failed")

    def OnJobDeleted(self, job):
        self.Abandon(job, "deleted")

    def OnJobRequeued(self, job):
        if IsPublishJob(job):
            self.LogInfo("AtomicPublishEvents: job %s was requeued: nothing rolled back or changed (a published "
                         "publish stays published; the others resume on their next attempt)" % job.JobId)

    # -- rollback ----------------------------------------------------------------------------
    def Abandon(self, job, what):
        """Run `atomic-publish abandon` for the job and relay its line for each publish."""
        if not IsPublishJob(job):
            return
        settings = WrapperSettings(self, self.JobPluginConfig())
        wait = self.GetIntegerConfigEntryWithDefault("BusyWaitSeconds", DEFAULT_BUSY_WAIT_SECONDS)
        timeout = self.GetIntegerConfigEntryWithDefault("TimeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
        arguments = ["abandon", "--job-id=%s" % job.JobId, "--reason=job %s was %s in Deadline" % (job.JobId, what),
                     "--wait=%d" % wait]
        code, lines = settings.Run(arguments, True, timeout)
        if code is None:
            self.LogWarning("AtomicPublishEvents: job %s was %s, but no atomic-publish executable exists on this "
                            "machine (AtomicPublishExecutable); nothing was rolled back: run `atomic-publish "
                            "abandon --job-id %s` where it is installed" % (job.JobId, what, job.JobId))
            return
        for line in lines:
            if line.startswith(ABANDON_PREFIX):
                self.LogInfo("AtomicPublishEvents: " + line[len(ABANDON_PREFIX):])
        if code == 0:
            return
        for line in [l for l in lines if l.strip() and not l.startswith(ABANDON_PREFIX)][-20:]:
            self.LogWarning("AtomicPublishEvents: " + line)
        if code == "timeout":
            outcome = "did not finish within %d s (TimeoutSeconds) and was stopped" % timeout
        else:
            outcome = "exited %d" % code
        self.LogWarning("AtomicPublishEvents: atomic-publish abandon for job %s %s; what it could not settle is "
                        "left as it is: run `atomic-publish abandon --job-id %s` again once the attempt "
                        "holding it has ended" % (job.JobId, outcome, job.JobId))

    def JobPluginConfig(self):
        """The AtomicPublish job plugin's configuration (executable, store, secrets), or None."""
        try:
            return RepositoryUtils.GetPluginConfig(JOB_PLUGIN)
        except Exception as error:
            self.LogWarning("AtomicPublishEvents: cannot read the %s plugin configuration (%s); using this "
                            "event plugin's own entries only" % (JOB_PLUGIN, error))
            return None
