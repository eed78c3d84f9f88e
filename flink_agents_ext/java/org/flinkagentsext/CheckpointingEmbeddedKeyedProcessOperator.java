package org.flinkagentsext;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.functions.python.DataStreamPythonFunctionInfo;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.python.embedded.AbstractEmbeddedDataStreamPythonFunctionOperator;
import org.apache.flink.streaming.api.operators.python.embedded.EmbeddedPythonKeyedProcessOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;

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
 *
 * <p>Work the function finishes off the task thread comes back through a {@link
 * CompletionDrain}: Python takes a {@link #keyHandle()} for the current key when the work starts;
 * one callback maps the handles of finished work ({@code _fae_bridge.take_completions()}) back to
 * their keys and fires their timers. The operator tracks the keys' work itself, so Python makes no
 * call for it: taking a handle registers the key's resume timer ({@link
 * CompletionDrain#RESUME_TIMER}), a fired key that took no new handle has it deleted, and at the
 * final watermark the outstanding work is drained before the watermark goes on (every key's next
 * run started as soon as its previous one finished, not one key after another).
 */
public class CheckpointingEmbeddedKeyedProcessOperator<K, IN, OUT>
        extends EmbeddedPythonKeyedProcessOperator<K, IN, OUT> {

    private static final long serialVersionUID = 1L;

    private static final String BRIDGE = "_fae_bridge";

    private final TypeInformation<IN> inputType;
    private long completionIntervalMs;

    private transient BridgeLifecycle bridge;
    private transient LinkedHashSet<Object> changedKeys;
    /** Without checkpointing no snapshot ever takes the changed keys: they are not kept. */
    private transient boolean trackChangedKeys;
    private transient Iterator<Object> keyCursor;
    private transient boolean userFunctionClosed;
    private transient HashMap<Long, Object> handleKeys;
    private transient long nextHandle;
    private transient InternalTimerService<VoidNamespace> userTimers;
    private transient boolean handleTaken;

    public CheckpointingEmbeddedKeyedProcessOperator(
            Configuration config,
            DataStreamPythonFunctionInfo pythonFunctionInfo,
            TypeInformation<IN> inputTypeInfo,
            TypeInformation<OUT> outputTypeInfo) {
        super(config, pythonFunctionInfo, inputTypeInfo, outputTypeInfo);
        this.inputType = inputTypeInfo;
    }

    /** Collect the function's finished work every {@code intervalMs} ({@code <= 0}: never). */
    public void setCompletionIntervalMs(long intervalMs) {
        this.completionIntervalMs = intervalMs;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        changedKeys = new LinkedHashSet<>();
        trackChangedKeys =
                CheckpointingOptions.isCheckpointingEnabled(
                        getRuntimeContext().getJobConfiguration());
        userFunctionClosed = false;
        handleKeys = new HashMap<>();
        nextHandle = 0L;
        bridge =
                BridgeLifecycle.initialize(
                        context,
                        this,
                        completionIntervalMs,
                        this::fireCompleted,
                        new CompletionDrain.FireListener() {
                            @Override
                            public void beforeFire() {
                                handleTaken = false;
                            }

                            @Override
                            public void afterFire() {
                                if (!handleTaken) { // the key's work is done
                                    userTimers.deleteEventTimeTimer(
                                            VoidNamespace.INSTANCE, CompletionDrain.RESUME_TIMER);
                                }
                            }
                        });
    }

    @Override
    public void open() throws Exception {
        BridgeLifecycle.open(this::openBridge);
    }

    /** Opens the Python function (in {@code super.open()}), then the bridge. */
    private void openBridge() throws Exception {
        super.open();
        interpreter.set("_fae_operator", this);
        interpreter.exec(
                "from flink_agents_ext.checkpoint._thread_mode import attach as _fae_attach\n"
                        + BRIDGE
                        + " = _fae_attach(operation, _fae_operator)\n");
        bridge.markOpen();
        interpreter.invokeMethod(BRIDGE, "open_timeline", bridge.timeline.wire());
        if (bridge.ledger.hasRestored()) {
            interpreter.invokeMethod(
                    BRIDGE,
                    "restore",
                    bridge.ledger.restoredCheckpointId(),
                    bridge.ledger.takeRestored().toArray(new Object[0]));
        }
        userTimers = getInternalTimerService("user-timers", VoidNamespaceSerializer.INSTANCE, this);
        bridge.completions.resumeFrom(userTimers);
    }

    /**
     * Called from Python when work for the current key starts off the task thread.
     *
     * @return the handle Python pushes when the work finished
     */
    public long keyHandle() {
        long handle = nextHandle++;
        handleKeys.put(handle, getCurrentKey());
        handleTaken = true;
        userTimers.registerEventTimeTimer(VoidNamespace.INSTANCE, CompletionDrain.RESUME_TIMER);
        bridge.completions.schedule();
        return handle;
    }

    /** The drain's step: fire the keys of the finished handles; true while any is out. */
    private boolean fireCompleted(long now) throws Exception {
        Object taken = interpreter.invokeMethod(BRIDGE, "take_completions");
        Object[] handles =
                taken instanceof List ? ((List<?>) taken).toArray() : (Object[]) taken;
        for (Object handle : handles) {
            Object key = handleKeys.remove(((Number) handle).longValue());
            if (key != null) {
                bridge.completions.fire(key, now);
            }
        }
        return !handleKeys.isEmpty();
    }

    /**
     * The final watermark (end of a bounded input): before it goes on (and fires the timers), the
     * keys still to resume after a restore are fired and the outstanding work is drained, each
     * finished key fired as its work completes (it applies the result and starts its next run at
     * once, so every key's queue advances in parallel). The function ignores its end-of-input
     * timers then.
     */
    @Override
    public void processWatermark(Watermark mark) throws Exception {
        if (mark.getTimestamp() == Long.MAX_VALUE && bridge.completions.enabled()) {
            bridge.completions.fireResumed(getProcessingTimeService().getCurrentProcessingTime());
            while (fireCompleted(getProcessingTimeService().getCurrentProcessingTime())) {
                Thread.sleep(1);
            }
        }
        super.processWatermark(mark);
    }

    @Override
    public void processElement(StreamRecord<IN> element) throws Exception {
        super.processElement(element);
        if (trackChangedKeys) {
            changedKeys.add(getCurrentKey());
        }
    }

    @Override
    public void onEventTime(InternalTimer<K, VoidNamespace> timer) throws Exception {
        super.onEventTime(timer);
        if (trackChangedKeys) {
            changedKeys.add(timer.getKey());
        }
    }

    @Override
    public void onProcessingTime(InternalTimer<K, VoidNamespace> timer) throws Exception {
        super.onProcessingTime(timer);
        if (trackChangedKeys) {
            changedKeys.add(timer.getKey());
        }
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

    /**
     * Called from Python during a snapshot whose function did not walk the changed keys:
     * forgets them in one call (instead of making each one current in turn).
     */
    public void discardChangedKeys() {
        keyCursor = null;
        changedKeys.clear();
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
        super.snapshotState(context);
        long checkpointId = context.getCheckpointId();
        if (!bridge.isOpen()) {
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
        bridge.store(blob);
    }

    @Override
    public void notifyCheckpointComplete(long checkpointId) throws Exception {
        super.notifyCheckpointComplete(checkpointId);
        bridge.forward(true, checkpointId, this::toBridge);
    }

    @Override
    public void notifyCheckpointAborted(long checkpointId) throws Exception {
        super.notifyCheckpointAborted(checkpointId);
        bridge.forward(false, checkpointId, this::toBridge);
    }

    private void toBridge(boolean complete, long checkpointId) {
        interpreter.invokeMethod(BRIDGE, complete ? "complete" : "abort", checkpointId);
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
            if (interpreter != null && bridge != null && bridge.isOpen() && !userFunctionClosed) {
                userFunctionClosed = true;
                interpreter.invokeMethod("operation", "close");
            }
        } finally {
            if (bridge != null) {
                bridge.close();
            }
            super.close();
        }
    }

    @Override
    public <T> AbstractEmbeddedDataStreamPythonFunctionOperator<T> copy(
            DataStreamPythonFunctionInfo pythonFunctionInfo, TypeInformation<T> outputTypeInfo) {
        CheckpointingEmbeddedKeyedProcessOperator<K, IN, T> copy =
                new CheckpointingEmbeddedKeyedProcessOperator<>(
                        config, pythonFunctionInfo, inputType, outputTypeInfo);
        copy.setCompletionIntervalMs(completionIntervalMs);
        return copy;
    }
}
