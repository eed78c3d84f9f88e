package org.flinkagentsext;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeutils.base.array.BytePrimitiveArraySerializer;
import org.apache.flink.runtime.state.StateInitializationContext;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The checkpoint bridge's ledger in operator list state, shared by the operators of both
 * execution modes: each snapshot stores the subtask's serialized ledger; after a restore the
 * stored blobs (several after a change of parallelism) are handed to the Python bridge once.
 */
final class LedgerState {

    /** Operator list state holding the ledger; the same name in both modes. */
    static final String NAME = "flink-agents-ext.checkpoint-ledger";

    private final ListState<byte[]> state;
    private final long restoredCheckpointId;
    private List<byte[]> restored;

    private LedgerState(ListState<byte[]> state, long restoredCheckpointId,
            List<byte[]> restored) {
        this.state = state;
        this.restoredCheckpointId = restoredCheckpointId;
        this.restored = restored;
    }

    /** Registers the state in {@code initializeState} and reads what a restore brought. */
    static LedgerState initialize(StateInitializationContext context) throws Exception {
        ListState<byte[]> state =
                context.getOperatorStateStore()
                        .getListState(
                                new ListStateDescriptor<>(
                                        NAME, BytePrimitiveArraySerializer.INSTANCE));
        if (!context.isRestored()) {
            return new LedgerState(state, -1L, null);
        }
        List<byte[]> blobs = new ArrayList<>();
        for (byte[] blob : state.get()) {
            blobs.add(blob);
        }
        return new LedgerState(state, context.getRestoredCheckpointId().orElse(-1L), blobs);
    }

    /** Whether restored blobs wait to be handed to the bridge. */
    boolean hasRestored() {
        return restored != null;
    }

    /** The checkpoint the operator was restored from ({@code -1} if not restored). */
    long restoredCheckpointId() {
        return restoredCheckpointId;
    }

    /** The restored blobs, once; {@code null} afterwards or when not restored. */
    List<byte[]> takeRestored() {
        List<byte[]> blobs = restored;
        restored = null;
        return blobs;
    }

    /** Stores {@code ledger} as this subtask's ledger of the checkpoint being taken. */
    void store(byte[] ledger) throws Exception {
        state.update(Collections.singletonList(ledger));
    }
}
