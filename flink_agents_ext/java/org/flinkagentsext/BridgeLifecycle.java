package org.flinkagentsext;

import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What the operators of both execution modes keep about their Python bridge: the ledger and
 * timeline operator state, the completion drain, and whether the bridge is open. Each operator
 * holds only how its mode talks to Python.
 */
final class BridgeLifecycle {

    private static final Logger LOG = LoggerFactory.getLogger(BridgeLifecycle.class);

    /** How a mode opens the Python function and then its bridge. */
    interface Opening {
        void open() throws Exception;
    }

    /** How a mode delivers a checkpoint notification to its bridge. */
    interface Notify {
        void send(boolean complete, long checkpointId) throws Exception;
    }

    final LedgerState ledger;
    final TimelineState timeline;
    final CompletionDrain completions;
    private boolean open;

    private BridgeLifecycle(LedgerState ledger, TimelineState timeline,
            CompletionDrain completions) {
        this.ledger = ledger;
        this.timeline = timeline;
        this.completions = completions;
    }

    /**
     * Registers the operator state in {@code initializeState}; {@code step} is the mode's
     * {@link CompletionDrain.Step}, run every {@code completionIntervalMs}.
     */
    static BridgeLifecycle initialize(StateInitializationContext context,
            AbstractStreamOperator<?> operator, long completionIntervalMs,
            CompletionDrain.Step step) throws Exception {
        return initialize(context, operator, completionIntervalMs, step, null);
    }

    /** As above; {@code listener} is told around each fire of the drain ({@code null}: none). */
    static BridgeLifecycle initialize(StateInitializationContext context,
            AbstractStreamOperator<?> operator, long completionIntervalMs,
            CompletionDrain.Step step, CompletionDrain.FireListener listener) throws Exception {
        return new BridgeLifecycle(
                LedgerState.initialize(context),
                TimelineState.initialize(context, operator.getRuntimeContext()),
                new CompletionDrain(operator, completionIntervalMs, step, listener));
    }

    /**
     * Runs the mode's {@code opening}; a failure Python marked not recoverable is wrapped so
     * that the job is not restarted ({@link NotRecoverable}).
     */
    static void open(Opening opening) throws Exception {
        try {
            opening.open();
        } catch (Exception e) {
            throw NotRecoverable.classify(e);
        }
    }

    /** The bridge is attached: notifications and snapshots reach it from now on. */
    void markOpen() {
        open = true;
    }

    boolean isOpen() {
        return open;
    }

    /** Stores the snapshot's {@code ledger} and the timeline with the checkpoint being taken. */
    void store(byte[] snapshotLedger) throws Exception {
        ledger.store(snapshotLedger);
        timeline.store();
    }

    /**
     * Sends the notification if the bridge is open; a completion after it closed is logged (an
     * abort then is not: aborts are best effort).
     */
    void forward(boolean complete, long checkpointId, Notify notify) throws Exception {
        if (open) {
            notify.send(complete, checkpointId);
        } else if (complete) {
            LOG.warn("checkpoint {} completed after the Python bridge was closed", checkpointId);
        }
    }

    /** The bridge is closed: no more notifications; the drain stops. */
    void close() {
        open = false;
        completions.close();
    }
}
