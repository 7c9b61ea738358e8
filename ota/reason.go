package ota

// Reasons of failed steps and devices, in StepResult.Reason and
// DeviceResultStatus.Reason. They are stable words that tools group by.
const (
	// ReasonExitCode: the process exited with a non-zero code.
	ReasonExitCode = "ExitCode"
	// ReasonTimeout: the step's timeout killed it.
	ReasonTimeout = "Timeout"
	// ReasonKilled: the process was killed by a signal the agent did not
	// send (the OOM killer, an operator).
	ReasonKilled = "Killed"
	// ReasonStartFailed: the process could not be started (no such
	// command, unknown user, bad working directory).
	ReasonStartFailed = "StartFailed"
	// ReasonNotRoot: the step needs a user or owner change and the agent
	// does not run as root.
	ReasonNotRoot = "NotRoot"
	// ReasonPolicyDenied: the node's policy (--ota-allow, --ota-paths)
	// refused the step.
	ReasonPolicyDenied = "PolicyDenied"
	// ReasonInvalid: the step itself is malformed.
	ReasonInvalid = "Invalid"
	// ReasonTooLarge: a file is over the step's maxBytes.
	ReasonTooLarge = "TooLarge"
	// ReasonIOError: a file could not be read or written.
	ReasonIOError = "IOError"
	// ReasonBlobUnavailable: contentFrom could not be fetched.
	ReasonBlobUnavailable = "BlobUnavailable"
	// ReasonDigestMismatch: contentFrom's bytes do not match its digest
	// or size; nothing was replaced.
	ReasonDigestMismatch = "DigestMismatch"
	// ReasonAnsibleMissing: ansible-playbook is not on the node.
	ReasonAnsibleMissing = "AnsibleMissing"
	// ReasonPlaybookFailed: a play failed or its host was unreachable.
	ReasonPlaybookFailed = "PlaybookFailed"
	// ReasonInterrupted: the node found the step started but never
	// finished (the agent died during it); it is not run again.
	ReasonInterrupted = "Interrupted"
	// ReasonJournal: the node's record of step results could not be read
	// or written, so the step was not run.
	ReasonJournal = "JournalError"

	// ReasonStepFailed: a device failed because one of its steps did.
	ReasonStepFailed = "StepFailed"
	// ReasonDeviceTimeout: the device timeout ended the run (of a device,
	// and of the step it killed).
	ReasonDeviceTimeout = "DeviceTimeout"
	// ReasonCanceled: the task was canceled or the agent stopped (of a
	// device, and of the step it killed).
	ReasonCanceled = "Canceled"
	// ReasonPreviousStepFailed: a skipped step's earlier step failed.
	ReasonPreviousStepFailed = "PreviousStepFailed"
)
