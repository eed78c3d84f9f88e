package org.flinkagentsext;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.streaming.api.functions.python.DataStreamPythonFunctionInfo;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.python.embedded.AbstractEmbeddedDataStreamPythonFunctionOperator;
import org.apache.flink.streaming.api.operators.python.embedded.EmbeddedPythonKeyedProcessOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.Iterator;
import java.util.LinkedHashSet;

/**
 * Thread-mode ({@code python.execution-mode: thread}) keyed process operator that forwards
 * Flink's checkpoint lifecycle to the Python function's checkpoint bridge.
 *
 * <p>It records the keys of processed elements and timers; at {@code snapshotState} (before
 * the keyed state backend is snapshotted, so every state update made so far is in the
 * checkpoint) it calls {@code _fae_bridge.snapshot(id)} in the operator's interpreter, which
 * walks the changed keys through {@link #advanceChangedKey()} and returns the payload ledger.
 * The ledger is stored in operator list state and handed back on restore. Completion and
 * abort notifications are forwarded as they arrive.
 */
public class CheckpointingEmbeddedKeyedProcessOperator<K, IN, OUT>
        extends EmbeddedPythonKeyedProcessOperator<K, IN, OUT> {

    private static final long serialVersionUID = 1L;
    private static final Logger LOG =
            LoggerFactory.getLogger(CheckpointingEmbeddedKeyedProcessOperator.class);

    private static final String BRIDGE = "_fae_bridge";

    private final TypeInformation<IN> inputType;

    private transient LedgerState ledger;
    private transient TimelineState timeline;
    private transient LinkedHashSet<Object> changedKeys;
    private transient Iterator<Object> keyCursor;
    private transient boolean bridgeOpen;
    private transient boolean userFunctionClosed;

    public CheckpointingEmbeddedKeyedProcessOperator(
            Configuration config,
            DataStreamPythonFunctionInfo pythonFunctionInfo,
            TypeInformation<IN> inputTypeInfo,
            TypeInformation<OUT> outputTypeInfo) {
        super(config, pythonFunctionInfo, inputTypeInfo, outputTypeInfo);
        this.inputType = inputTypeInfo;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        changedKeys = new LinkedHashSet<>();
        bridgeOpen = false;
        userFunctionClosed = false;
        ledger = LedgerState.initialize(context);
        timeline = TimelineState.initialize(context, getRuntimeContext());
    }

    @Override
    public void open() throws Exception {
        try {
            openBridge();
        } catch (Exception e) {
            throw NotRecoverable.classify(e);
        }
    }

    /** Opens the Python function (in {@code super.open()}), then the bridge. */
    private void openBridge() throws Exception {
        super.open();
        interpreter.set("_fae_operator", this);
        interpreter.exec(
                "from flink_agents_ext.checkpoint._thread_mode import attach as _fae_attach\n"
                        + BRIDGE
                        + " = _fae_attach(operation, _fae_operator)\n");
        bridgeOpen = true;
        interpreter.invokeMethod(BRIDGE, "open_timeline", timeline.wire());
        if (ledger.hasRestored()) {
            interpreter.invokeMethod(
                    BRIDGE,
                    "restore",
                    ledger.restoredCheckpointId(),
                    ledger.takeRestored().toArray(new Object[0]));
        }
    }

    @Override
    public void processElement(StreamRecord<IN> element) throws Exception {
        super.processElement(element);
        changedKeys.add(getCurrentKey());
    }

    @Override
    public void onEventTime(InternalTimer<K, VoidNamespace> timer) throws Exception {
        super.onEventTime(timer);
        changedKeys.add(timer.getKey());
    }

    @Override
    public void onProcessingTime(InternalTimer<K, VoidNamespace> timer) throws Exception {
        super.onProcessingTime(timer);
        changedKeys.add(timer.getKey());
    }

    /**
     * Called from Python during a snapshot: makes the next changed key the current key.
     *
     * @return false when every changed key has been visited (the set is then cleared)
     */
    public boolean advanceChangedKey() {
        if (keyCursor == null) {
            keyCursor = changedKeys.iterator();
        }
        if (keyCursor.hasNext()) {
            setCurrentKey(keyCursor.next());
            return true;
        }
        keyCursor = null;
        changedKeys.clear();
        return false;
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
        super.snapshotState(context);
        long checkpointId = context.getCheckpointId();
        if (!bridgeOpen) {
            throw new IllegalStateException(
                    "checkpoint " + checkpointId + " taken before the Python bridge was opened");
        }
        Object previousKey = getCurrentKey();
        keyCursor = null;
        byte[] blob;
        try {
            blob = (byte[]) interpreter.invokeMethod(BRIDGE, "snapshot", checkpointId);
        } finally {
            keyCursor = null;
            if (previousKey != null) {
                setCurrentKey(previousKey);
            }
        }
        ledger.store(blob);
        timeline.store();
    }

    @Override
    public void notifyCheckpointComplete(long checkpointId) throws Exception {
        super.notifyCheckpointComplete(checkpointId);
        if (bridgeOpen) {
            interpreter.invokeMethod(BRIDGE, "complete", checkpointId);
        } else {
            LOG.warn("checkpoint {} completed after the Python bridge was closed", checkpointId);
        }
    }

    @Override
    public void notifyCheckpointAborted(long checkpointId) throws Exception {
        super.notifyCheckpointAborted(checkpointId);
        if (bridgeOpen) {
            interpreter.invokeMethod(BRIDGE, "abort", checkpointId);
        }
    }

    /**
     * The stock operator closes the user function at end of input, before the final
     * checkpoint's callbacks; we close it in {@link #close()} instead, after them.
     */
    @Override
    public void endInput() {}

    @Override
    public void close() throws Exception {
        try {
            if (interpreter != null && bridgeOpen && !userFunctionClosed) {
                userFunctionClosed = true;
                interpreter.invokeMethod("operation", "close");
            }
        } finally {
            bridgeOpen = false;
            super.close();
        }
    }

    @Override
    public <T> AbstractEmbeddedDataStreamPythonFunctionOperator<T> copy(
            DataStreamPythonFunctionInfo pythonFunctionInfo, TypeInformation<T> outputTypeInfo) {
        return new CheckpointingEmbeddedKeyedProcessOperator<>(
                config, pythonFunctionInfo, inputType, outputTypeInfo);
    }
}
