package org.flinkagentsext;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeutils.base.StringSerializer;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.streaming.api.operators.StreamingRuntimeContext;

import java.util.Collections;

/**
 * The job timeline (lineage) of the operator, shared by the operators of both execution modes.
 *
 * <p>A fresh start (not restored) begins a lineage named after the Flink job id, the same in
 * every subtask. Each snapshot stores {@code lineage \n job id} in <b>union</b> operator list
 * state, so after a failover, a change of parallelism or a savepoint resume every subtask gets
 * the lineage back, and the id of the job that took the restored checkpoint. A restore from a
 * checkpoint without this state (taken before lineages existed) gets the legacy lineage "".
 * {@link #wire()} is what the Python bridge's {@code open_timeline} reads (see
 * {@code flink_agents_ext/checkpoint/timeline.py}), with whether the job checkpoints at all.
 */
final class TimelineState {

    /** Union operator list state holding the lineage; the same name in both modes. */
    static final String NAME = "flink-agents-ext.timeline";

    private final ListState<String> state;
    private final String lineage;
    private final String jobId;
    private final int attempt;
    private final long restoredCheckpointId;
    private final String restoredCheckpointJobId;
    private final boolean checkpointing;

    private TimelineState(ListState<String> state, String lineage, String jobId, int attempt,
            long restoredCheckpointId, String restoredCheckpointJobId, boolean checkpointing) {
        this.state = state;
        this.lineage = lineage;
        this.jobId = jobId;
        this.attempt = attempt;
        this.restoredCheckpointId = restoredCheckpointId;
        this.restoredCheckpointJobId = restoredCheckpointJobId;
        this.checkpointing = checkpointing;
    }

    /** Registers the state in {@code initializeState} and decides the lineage. */
    static TimelineState initialize(StateInitializationContext context,
            StreamingRuntimeContext runtime) throws Exception {
        ListState<String> state =
                context.getOperatorStateStore()
                        .getUnionListState(
                                new ListStateDescriptor<>(NAME, StringSerializer.INSTANCE));
        String jobId = runtime.getJobInfo().getJobId().toHexString();
        int attempt = runtime.getTaskInfo().getAttemptNumber();
        boolean checkpointing =
                CheckpointingOptions.isCheckpointingEnabled(runtime.getJobConfiguration());
        if (!context.isRestored()) {
            return new TimelineState(state, jobId, jobId, attempt, -1L, "", checkpointing);
        }
        String lineage = null;
        String checkpointJob = null;
        for (String entry : state.get()) {
            String[] parts = entry.split("\n", -1);
            if (parts.length != 2) {
                throw new IllegalStateException("corrupt job timeline state: " + entry);
            }
            if (lineage != null && !(lineage.equals(parts[0]) && checkpointJob.equals(parts[1]))) {
                throw new IllegalStateException(
                        "the restored checkpoint holds two job timelines: " + lineage + " of "
                                + checkpointJob + " and " + parts[0] + " of " + parts[1]);
            }
            lineage = parts[0];
            checkpointJob = parts[1];
        }
        long restoredId = context.getRestoredCheckpointId().orElse(0L);
        if (lineage == null) { // a checkpoint taken before lineages existed
            return new TimelineState(state, "", jobId, attempt, restoredId, "", checkpointing);
        }
        return new TimelineState(
                state, lineage, jobId, attempt, restoredId, checkpointJob, checkpointing);
    }

    /** The timeline in the wire format of the Python bridge. */
    String wire() {
        return lineage + "\n" + jobId + "\n" + attempt + "\n" + restoredCheckpointId + "\n"
                + restoredCheckpointJobId + "\n" + (checkpointing ? "1" : "0");
    }

    /** Stores this subtask's entry with the checkpoint being taken. */
    void store() throws Exception {
        state.update(Collections.singletonList(lineage + "\n" + jobId));
    }
}
