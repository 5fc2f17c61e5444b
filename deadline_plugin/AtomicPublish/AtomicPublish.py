"""AtomicPublish: Deadline 10 Simple plugin that runs `atomic-publish run` for one task.

Thin on purpose: it builds the wrapper's command line and environment, feeds the wrapper's
`[atomic-publish]` lines to the Monitor and turns the wrapper's exit code into a Deadline action.
All publishing logic lives in the wrapper (see docs/contract.md and docs/deadline.md).
It runs in Deadline's own Python: standard library and Deadline.* only.
"""
import json
import os
import tempfile

from Deadline.Plugins import *
from Deadline.Scripting import *

PROGRESS_REGEX = r"\[atomic-publish\] progress ([0-9.]+)%"
STATUS_REGEX = r"\[atomic-publish\] status (.*)"
RESULT_REGEX = r"\[atomic-publish\] result (\S+) exit=(\d+) class=(\S+): (.*)"

EXIT_SUCCESS = 0
EXIT_TRANSIENT = 75
EXIT_BUSY = 76
EXIT_WORKER_LOCAL = 77
EXIT_PERMANENT = 78

# plugin-info key -> wrapper option; passed only when the key is set (docs/contract.md)
POLICY_OPTIONS = (
    ("RetryAttempts", "--retry-attempts"),
    ("RetryBudgetSeconds", "--retry-budget"),
    ("MaxKeyAttempts", "--max-key-attempts"),
    ("MaxFailingWorkers", "--max-failing-workers"),
    ("OnPermanentError", "--on-permanent-error"),
    ("ProtectPublished", "--protect-published"),
    ("StoreId", "--store-id"),  # the store the job was submitted for: another store refuses (not a secret)
)
ON_PERMANENT_ERROR_VALUES = ("fail-job", "fail-task")

# plugin configuration entry -> wrapper environment variable: plain settings of the catalogue and
# the AYON/OpenPype metadata input (docs/ayon-openpype.md); never secrets
SETTINGS_ENTRIES = (
    ("SettingsFile", "ATOMIC_PUBLISH_SETTINGS"),
    ("Catalog", "ATOMIC_PUBLISH_CATALOG"),
    ("AyonServerUrl", "AYON_SERVER_URL"),  # as the Ayon plugin passes it; the AYON catalogue reads it
    ("HeroProductTypes", "ATOMIC_PUBLISH_HERO"),  # hero versions for these product types (docs/hero.md)
)
# options of the launcher's `publish` command (ayon-core cli.py, OpenPype pype_commands) that take a value
PUBLISH_VALUE_OPTIONS = ("--targets", "-t")


def GetDeadlinePlugin():
    return AtomicPublishPlugin()


def CleanupDeadlinePlugin(deadlinePlugin):
    deadlinePlugin.Cleanup()


def QuoteArgument(argument):
    """Quote one argument for Deadline's argument string (Windows command-line rules).

    Deadline splits RenderArgument like a command line. Quoting only what needs it, and
    doubling backslashes only before a quote, gives the same argv under CommandLineToArgvW
    rules and under a POSIX shell-like split (the local farm's shlex), for paths without
    runs of backslashes inside quotes.
    """
    text = str(argument)
    if text and not any(c in text for c in ' \t\n\v"\\\'$`'):
        return text
    quoted = []
    backslashes = 0
    for char in text:
        if char == "\\":
            backslashes += 1
            continue
        if char == '"':
            quoted.append("\\" * (backslashes * 2 + 1) + '"')
        else:
            quoted.append("\\" * backslashes + char)
        backslashes = 0
    quoted.append("\\" * (backslashes * 2))
    return '"' + "".join(quoted) + '"'


def SplitArguments(text):
    """Split a command line by the rules of CommandLineToArgvW, which ayon-deadline's submitter
    (subprocess.list2cmdline) writes for: backslashes are literal except before a quote."""
    arguments = []
    current = []
    inArgument = False
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if char in " \t" and not quoted:
            if inArgument:
                arguments.append("".join(current))
                current = []
                inArgument = False
            i += 1
            continue
        inArgument = True
        if char == "\\":
            count = 0
            while i < len(text) and text[i] == "\\":
                count += 1
                i += 1
            if i < len(text) and text[i] == '"':
                current.append("\\" * (count // 2))
                if count % 2:
                    current.append('"')
                    i += 1
            else:
                current.append("\\" * count)
            continue
        if char == '"':
            if quoted and i + 1 < len(text) and text[i + 1] == '"':
                current.append('"')
                i += 2
                continue
            quoted = not quoted
            i += 1
            continue
        current.append(char)
        i += 1
    if inArgument:
        arguments.append("".join(current))
    return arguments


def MetadataPathFromArguments(arguments):
    """The metadata path of an AYON/OpenPype publish job's plugin-info Arguments
    (``--headless publish "{root[work]}/.../x_metadata.json" --targets deadline --targets farm``).

    Returns (path, problem): one of them is None."""
    tokens = SplitArguments(arguments.replace("<QUOTE>", '"'))
    if "publish" not in tokens:
        return None, "has no `publish <metadata path>` command"
    paths = []
    rest = tokens[tokens.index("publish") + 1:]
    skip = False
    for token in rest:
        if skip:
            skip = False
            continue
        if token.startswith("-"):
            skip = token in PUBLISH_VALUE_OPTIONS
            continue
        while len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
            token = token[1:-1]  # the submitter quotes the path itself: '"{}"'.format(path)
        paths.append(token)
    if not paths:
        return None, "names no metadata file after `publish`"
    if len(paths) > 1:
        return None, ("names %d metadata files (%s); atomic-publish publishes one per job: submit one job per "
                      "file" % (len(paths), ", ".join(paths)))
    return paths[0], None


def DescribeExitCode(exitCode):
    """Name an exit code the contract does not list, for the error report."""
    if exitCode < 0:
        return "killed by signal %d" % -exitCode
    if exitCode == 1:
        return "the wrapper crashed"
    return "not an atomic-publish exit code"


class AtomicPublishPlugin(DeadlinePlugin):
    def __init__(self):
        super().__init__()
        self.InitializeProcessCallback += self.InitializeProcess
        self.PreRenderTasksCallback += self.PreRenderTasks
        self.RenderExecutableCallback += self.RenderExecutable
        self.RenderArgumentCallback += self.RenderArgument
        self.CheckExitCodeCallback += self.CheckExitCode
        self.PostRenderTasksCallback += self.PostRenderTasks
        self.resultLine = ""
        self.storeFile = ""
        self.secretsFile = ""

    def Cleanup(self):
        for stdoutHandler in self.StdoutHandlers:
            del stdoutHandler.HandleCallback
        del self.InitializeProcessCallback
        del self.PreRenderTasksCallback
        del self.RenderExecutableCallback
        del self.RenderArgumentCallback
        del self.CheckExitCodeCallback
        del self.PostRenderTasksCallback
        self.RemoveStoreFile()

    # -- setup -------------------------------------------------------------------------------
    def InitializeProcess(self):
        self.PluginType = PluginType.Simple
        self.SingleFramesOnly = False
        self.StdoutHandling = True
        self.UseProcessTree = True
        self.AddStdoutHandlerCallback(PROGRESS_REGEX).HandleCallback += self.HandleProgress
        self.AddStdoutHandlerCallback(STATUS_REGEX).HandleCallback += self.HandleStatus
        self.AddStdoutHandlerCallback(RESULT_REGEX).HandleCallback += self.HandleResult

    def PreRenderTasks(self):
        self.resultLine = ""
        onPermanentError = self.OnPermanentError()
        if onPermanentError not in ON_PERMANENT_ERROR_VALUES:
            self.FailRender("AtomicPublish: plugin info OnPermanentError=%s is invalid; use one of %s "
                            "(resubmit the job with a valid value)"
                            % (onPermanentError, ", ".join(ON_PERMANENT_ERROR_VALUES)))
        sourceRoots = self.GetConfigEntryWithDefault("SourceRoots", "").strip()
        if sourceRoots:  # not a secret: where render outputs may come from on this worker
            self.SetProcessEnvironmentVariable("ATOMIC_PUBLISH_SOURCE_ROOTS",
                                               os.pathsep.join(r.strip() for r in sourceRoots.split(";") if r.strip()))
        for entry, variable in SETTINGS_ENTRIES:  # not secrets: the studio settings file and catalogue choice
            value = self.GetConfigEntryWithDefault(entry, "").strip()
            if value:
                self.SetProcessEnvironmentVariable(
                    variable, RepositoryUtils.CheckPathMapping(value) if entry == "SettingsFile" else value)
        self.CheckPublishJobEnvironment()
        self.storeFile = self.WritePrivateFile("store", self.GetConfigEntryWithDefault("StoreUri", "").strip())
        if self.storeFile:
            self.SetProcessEnvironmentVariable("ATOMIC_PUBLISH_STORE_FILE", self.storeFile)
            self.LogInfo("AtomicPublish: store URI from the plugin configuration (StoreUri), "
                         "passed to the wrapper in a 0600 file")
        secrets = self.IntegrationSecrets() + self.CatalogSecrets()
        self.secretsFile = self.WritePrivateFile("secrets", "".join("%s=%s\n" % pair for pair in secrets))
        if self.secretsFile:
            self.SetProcessEnvironmentVariable("ATOMIC_PUBLISH_SECRETS_FILE", self.secretsFile)
            self.LogInfo("AtomicPublish: integration settings %s from the plugin configuration, passed to "
                         "the wrapper in a 0600 file" % ", ".join(name for name, _ in secrets))

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

    def CheckPublishJobEnvironment(self):
        """An AYON/OpenPype job as their submitters write it says in its environment what it is:
        only a publish job belongs here (a render job sent to AtomicPublish would publish nothing)."""
        job = self.GetJob()
        for prefix in ("AYON", "OPENPYPE"):
            if job.GetJobEnvironmentKeyValue(prefix + "_RENDER_JOB").strip() == "1":
                self.FailRender("AtomicPublish: the job environment says %s_RENDER_JOB=1: this is a render job, "
                                "not a publish job; submit it with its own plugin" % prefix)
        context = [(name, job.GetJobEnvironmentKeyValue(name).strip())
                   for name in ("AYON_PROJECT_NAME", "AVALON_PROJECT", "AYON_FOLDER_PATH", "AVALON_ASSET",
                                "AYON_TASK_NAME", "AVALON_TASK")]
        context = [pair for pair in context if pair[1]]
        if context:  # names, not secrets: which publish this is
            self.LogInfo("AtomicPublish: publish job of %s (job environment)"
                         % ", ".join("%s=%s" % pair for pair in context))

    def WritePrivateFile(self, kind, content):
        """Write ``content`` to a new 0600 file in the job's data folder; "" when there is nothing to write.

        Never SetProcessEnvironmentVariable with a secret: Deadline logs its values."""
        if not content:
            return ""
        handle, path = tempfile.mkstemp(prefix="atomic-publish-%s-" % kind, suffix=".txt",
                                        dir=self.GetJobsDataDirectory())
        with os.fdopen(handle, "w") as stream:
            stream.write(content if content.endswith("\n") else content + "\n")
        return path

    def OnPermanentError(self):
        return self.GetPluginInfoEntryWithDefault("OnPermanentError", "").strip() or "fail-job"

    # -- command line ------------------------------------------------------------------------
    def RenderExecutable(self):
        candidates = self.GetConfigEntryWithDefault("AtomicPublishExecutable", "")
        executable = FileUtils.SearchFileList(candidates)
        if executable == "":
            decision = self.DenyListThisWorker()
            self.FailRender(
                "AtomicPublish: no atomic-publish executable on worker %s; none of these exists: %s. "
                "Install atomic-publish on this worker (pip install atomic-publish) or add its path "
                "in Monitor > Tools > Configure Plugins > AtomicPublish > Executable; %s"
                % (self.GetSlaveName(), candidates or "(empty list)", decision))
        return executable

    def RenderArgument(self):
        kind, submitted = self.SubmittedInput()
        local = self.MappedCopy(submitted) if kind == "manifest" else self.MappedMetadataCopy(submitted)
        options = [
            ("--" + kind, local),
            ("--submitted-" + kind, submitted),
            ("--job-id", self.GetJob().JobId),
            ("--task-id", self.GetCurrentTaskId()),
            ("--worker", self.GetSlaveName()),
        ]
        for key, option in POLICY_OPTIONS:
            value = self.GetPluginInfoEntryWithDefault(key, "").strip()
            if value and option == "--protect-published":
                value = "yes" if value.lower() in ("true", "yes", "1") else "no"
            if value:
                options.append((option, value))
        # --option=value: a value starting with "-" can never be read as another option.
        return " ".join(["run"] + [QuoteArgument("%s=%s" % pair) for pair in options])

    def SubmittedInput(self):
        """("manifest" or "metadata", the submitted file at its path-mapped location on this worker).

        Plugin info Manifest (atomic-publish submit), MetadataFile (a submitter of your own), or
        the Arguments an AYON/OpenPype submitter wrote for its own plugin. The file's content,
        unmapped, is the publish's fingerprint: the same on every platform. A rootless path
        ({root[work]}/...) is left for the wrapper, which resolves it with the studio settings."""
        manifest = self.GetPluginInfoEntryWithDefault("Manifest", "").strip()
        if manifest:
            return "manifest", RepositoryUtils.CheckPathMapping(manifest)
        metadata = self.GetPluginInfoEntryWithDefault("MetadataFile", "").strip()
        if not metadata:
            arguments = self.GetPluginInfoEntryWithDefault("Arguments", "").strip()
            if not arguments:
                self.FailRender("AtomicPublish: plugin info has no Manifest, MetadataFile or Arguments entry; "
                                "resubmit the job with `atomic-publish submit`")
            metadata, problem = MetadataPathFromArguments(arguments)
            if problem:
                self.FailRender("AtomicPublish: plugin info Arguments %s (Arguments=%s); fix the submitter"
                                % (problem, arguments))
            self.LogInfo("AtomicPublish: publish metadata %s, from the job's Arguments" % metadata)
        if not metadata.startswith("{root["):
            metadata = self.MapPath(metadata)
        return "metadata", metadata

    def MappedMetadataCopy(self, metadata):
        """A copy of an AYON/OpenPype metadata JSON with Deadline path mapping applied to each
        representation's absolute stagingDir (rootless ones are the wrapper's, like the file's own)."""
        if metadata.startswith("{root["):
            return metadata
        if not os.path.isfile(metadata):
            self.LogWarning("AtomicPublish: metadata %s not found on this worker" % metadata)
            return metadata
        mapped = os.path.join(self.GetJobsDataDirectory(),
                              "metadata.task%s.mapped%s" % (self.GetCurrentTaskId(), os.path.splitext(metadata)[1]))
        try:
            with open(metadata, "rb") as stream:
                data = json.loads(stream.read().decode("utf-8-sig"))
            if "instances" not in data:
                return self.MappedCopy(metadata)  # a manifest under MetadataFile
            for instance in data["instances"]:
                for representation in instance.get("representations") or []:
                    if isinstance(representation.get("stagingDir"), str):
                        representation["stagingDir"] = self.MapPath(representation["stagingDir"])
        except Exception:
            # Not a metadata the wrapper will accept: map the text and let the wrapper explain why.
            RepositoryUtils.CheckPathMappingInFile(metadata, mapped)
            return mapped
        with open(mapped, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1)
        return mapped

    def MappedCopy(self, manifest):
        """A copy of the manifest with Deadline path mapping applied to the paths inside it."""
        if not os.path.isfile(manifest):
            # Let the wrapper read the path and classify the problem itself.
            self.LogWarning("AtomicPublish: manifest %s not found on this worker" % manifest)
            return manifest
        extension = os.path.splitext(manifest)[1]
        mapped = os.path.join(self.GetJobsDataDirectory(),
                              "manifest.task%s.mapped%s" % (self.GetCurrentTaskId(), extension))
        try:
            with open(manifest, "rb") as stream:
                data = json.loads(stream.read().decode("utf-8-sig"))
            data["publish_root"], data["representations"]  # noqa: B018  (the shape the mapping walks)
        except Exception:
            # Not a manifest the wrapper will accept: map the text and let the wrapper explain why.
            RepositoryUtils.CheckPathMappingInFile(manifest, mapped)
            return mapped
        data["publish_root"] = self.MapPath(data["publish_root"])
        for representation in data["representations"]:
            representation["files"] = [self.MapPath(path) for path in representation.get("files", [])]
        for name in ("template", "source"):
            if isinstance(data.get(name), str):
                data[name] = self.MapPath(data[name])
        with open(mapped, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1)
        return mapped

    def MapPath(self, path):
        """Deadline path mapping of one manifest path (rules written with / match \\ too), with this
        worker's separators. Named-root paths ({root[work]}/...) are left for the wrapper."""
        if not isinstance(path, str) or path.startswith("{root["):
            return path
        windows = SystemUtils.IsRunningOnWindows()
        candidate = path if windows else path.replace("\\", "/")
        result = RepositoryUtils.CheckPathMapping(candidate)
        if result == candidate and not windows and candidate != path:
            result = RepositoryUtils.CheckPathMapping(path)
        return result if windows else result.replace("\\", "/")

    # -- stdout ------------------------------------------------------------------------------
    def HandleProgress(self):
        self.SetProgress(float(self.GetRegexMatch(1)))

    def HandleStatus(self):
        self.SetStatusMessage(self.GetRegexMatch(1))

    def HandleResult(self):
        self.resultLine = "%s (exit=%s class=%s): %s" % (
            self.GetRegexMatch(1), self.GetRegexMatch(2), self.GetRegexMatch(3), self.GetRegexMatch(4))

    # -- outcome -----------------------------------------------------------------------------
    def CheckExitCode(self, exitCode):
        self.RemoveStoreFile()
        if exitCode == EXIT_SUCCESS:
            return
        result = self.resultLine or "atomic-publish printed no result line"
        if exitCode in (EXIT_TRANSIENT, EXIT_BUSY):
            decision = "task error, Deadline requeues the task"
        elif exitCode == EXIT_WORKER_LOCAL:
            decision = self.DenyListThisWorker()
        elif exitCode == EXIT_PERMANENT:
            decision = self.FailPermanently()
        else:
            decision = ("unexpected exit code %d (%s): task error, requeued; check this task's log "
                        "for the wrapper's output (traceback, kill) before it retries"
                        % (exitCode, DescribeExitCode(exitCode)))
        self.FailRender("%s; AtomicPublish: %s" % (result, decision))

    def DenyListThisWorker(self):
        """Keep this worker off this job, whichever mode the job's machine-limit list is in."""
        worker = self.GetSlaveName()
        jobId = self.GetJob().JobId
        try:
            job = RepositoryUtils.GetJob(jobId, True)
            if job.JobWhitelistFlag:
                RepositoryUtils.RemoveSlavesFromMachineLimitList(jobId, [worker])
                return "worker %s removed from the allow list of job %s" % (worker, jobId)
            RepositoryUtils.AddSlavesToMachineLimitList(jobId, [worker])
            return "worker %s deny-listed for job %s" % (worker, jobId)
        except Exception as error:
            return "could not deny-list worker %s for job %s (%s); task error" % (worker, jobId, error)

    def FailPermanently(self):
        job = self.GetJob()
        try:
            if self.OnPermanentError() == "fail-task":
                RepositoryUtils.FailTasks(job, [self.GetCurrentTask()])
                return "permanent error, task %s failed (OnPermanentError=fail-task)" % self.GetCurrentTaskId()
            RepositoryUtils.FailJob(job)
            return "permanent error, job %s failed" % job.JobId
        except Exception as error:
            return "permanent error, but failing job %s did not work (%s); fail it in the Monitor" % (job.JobId, error)

    def PostRenderTasks(self):
        self.RemoveStoreFile()

    def RemoveStoreFile(self):
        """Delete the private files holding the store URI and the integration secrets."""
        for path in (self.storeFile, self.secretsFile):
            if path:
                try:
                    os.remove(path)
                except OSError:
                    pass
        self.storeFile = ""
        self.secretsFile = ""
