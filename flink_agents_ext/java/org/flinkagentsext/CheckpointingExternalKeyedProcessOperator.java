package org.flinkagentsext;

import org.apache.flink.api.common.state.BroadcastState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.common.typeutils.base.array.BytePrimitiveArraySerializer;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.memory.ByteArrayOutputStreamWithPos;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputViewStreamWrapper;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.functions.python.DataStreamPythonFunctionInfo;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.Triggerable;
import org.apache.flink.streaming.api.operators.python.process.AbstractExternalDataStreamPythonFunctionOperator;
import org.apache.flink.streaming.api.operators.python.process.ExternalPythonKeyedProcessOperator;
import org.apache.flink.streaming.api.operators.python.process.timer.TimerUtils;
import org.apache.flink.streaming.api.runners.python.beam.state.BeamStateStore;
import org.apache.flink.streaming.api.utils.ByteArrayWrapper;
import org.apache.flink.streaming.api.utils.ByteArrayWrapperSerializer;
import org.apache.flink.streaming.api.utils.PythonTypeUtils;
import org.apache.flink.table.functions.python.PythonEnv;
import org.apache.flink.table.functions.python.PythonFunction;
import org.apache.flink.table.functions.python.PythonFunctionKind;
import org.apache.flink.types.Row;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/**
 * Process-mode (the default {@code python.execution-mode}) keyed process operator that forwards
 * Flink's checkpoint lifecycle to the Python function's checkpoint bridge, which runs in the Beam
 * fn harness (a separate Python process).
 *
 * <p>How the two sides talk:
 *
 * <ul>
 *   <li><b>Attaching.</b> The serialized Python function of the first function of the chain (the
 *       user's) is wrapped in a tiny pickle that calls {@code
 *       flink_agents_ext.checkpoint._process_mode.load_function(original)} in the worker, which
 *       unpickles the function and hooks the bridge into PyFlink's operation that owns it.
 *   <li><b>Java to Python.</b> Signals travel over the timer channel as timer records with
 *       reserved timer-type codes (see {@code _process_mode.py}); the checkpoint id is the
 *       timestamp field and a payload, if any, the namespace field. The bundle is flushed before
 *       each signal (Beam's Python data plane handles the timers of a message before its data)
 *       and after it (so the callback has run, and its state writes are committed, on return).
 *   <li><b>Python to Java.</b> The snapshot's ledger is written by Python into a reserved
 *       operator (broadcast) state through PyFlink's own state channel and committed before the
 *       bundle ends; this operator reads and clears it right after the flush. This works with
 *       any chaining and before any element was processed.
 * </ul>
 *
 * <p>The snapshot runs in {@link #prepareSnapshotPreBarrier(long)}, after the flush of every
 * element before the barrier, so the keyed state the callback reads is exactly the checkpoint's.
 * The ledger is stored in operator list state (same name as in thread mode) and delivered to
 * the bridge's {@code restore} after a restore, in {@link #open()}, before any element.
 *
 * <p>Work the function finishes off the task thread comes back through a {@link
 * CompletionDrain}: every interval, signal {@code 69} makes the bridge fire, in the worker, a
 * processing-time timer for each key whose work finished.
 */
public class CheckpointingExternalKeyedProcessOperator<OUT>
        extends ExternalPythonKeyedProcessOperator<OUT> {

    private static final long serialVersionUID = 1L;

    /** Name of the broadcast state Python writes the snapshot's ledger into (no prefix). */
    static final String RETURN_STATE_NAME = "flink-agents-ext.ledger-return";

    /** Python module and function that load the user function and attach the bridge. */
    static final String PYTHON_LOADER_MODULE = "flink_agents_ext.checkpoint._process_mode";

    static final String PYTHON_LOADER_FUNCTION = "load_function";

    /** Timer-type codes reserved for signals; PyFlink uses 0 (event) and 1 (processing time). */
    static final byte SIGNAL_SNAPSHOT = 64;

    static final byte SIGNAL_COMPLETE = 65;
    static final byte SIGNAL_ABORT = 66;
    static final byte SIGNAL_RESTORE = 67;
    static final byte SIGNAL_TIMELINE = 68;
    static final byte SIGNAL_DRAIN = 69;

    private static final byte[] NO_PAYLOAD = new byte[0];

    private transient BridgeLifecycle bridge;
    private transient BroadcastState<ByteArrayWrapper, byte[]> returnState;
    private transient TypeSerializer<Row> signalSerializer;
    private transient ByteArrayOutputStreamWithPos signalBytes;
    private transient DataOutputViewStreamWrapper signalOut;
    private transient long snapshotCheckpointId;
    private transient byte[] snapshotLedger;
    private long completionIntervalMs;

    /**
     * Same arguments as {@link ExternalPythonKeyedProcessOperator}; the first function of {@code
     * pythonFunctionInfo} must be the user's {@code CheckpointedKeyedProcessFunction}.
     */
    public CheckpointingExternalKeyedProcessOperator(
            Configuration config,
            DataStreamPythonFunctionInfo pythonFunctionInfo,
            RowTypeInfo inputTypeInfo,
            TypeInformation<OUT> outputTypeInfo) {
        super(
                config,
                BridgedPythonFunction.attach(pythonFunctionInfo),
                inputTypeInfo,
                outputTypeInfo);
    }

    /** Collect the function's finished work every {@code intervalMs} ({@code <= 0}: never). */
    public void setCompletionIntervalMs(long intervalMs) {
        this.completionIntervalMs = intervalMs;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        snapshotCheckpointId = -1L;
        snapshotLedger = null;
        bridge =
                BridgeLifecycle.initialize(
                        context, this, completionIntervalMs, this::drainCompleted);
        // The same descriptor (name and serializers) PyFlink's operator state store registers for
        // a Python broadcast state of that name.
        returnState =
                context.getOperatorStateStore()
                        .getBroadcastState(
                                new MapStateDescriptor<>(
                                        BeamStateStore.PYTHON_STATE_PREFIX + RETURN_STATE_NAME,
                                        ByteArrayWrapperSerializer.INSTANCE,
                                        BytePrimitiveArraySerializer.INSTANCE));
        returnState.clear(); // it only carries a ledger within one snapshot; never restored
    }

    @Override
    public void open() throws Exception {
        BridgeLifecycle.open(this::openBridge);
    }

    /** Starts the Python worker; the first signal's bundle opens the function. */
    private void openBridge() throws Exception {
        super.open();
        RowTypeInfo keyType = new RowTypeInfo(((RowTypeInfo) getInputTypeInfo()).getTypeAt(0));
        signalSerializer =
                PythonTypeUtils.TypeInfoToSerializerConverter.typeInfoSerializerConverter(
                        TimerUtils.createTimerDataTypeInfo(keyType));
        signalBytes = new ByteArrayOutputStreamWithPos();
        signalOut = new DataOutputViewStreamWrapper(signalBytes);
        bridge.markOpen();
        sendSignal(SIGNAL_TIMELINE, 0L, bridge.timeline.wire().getBytes(StandardCharsets.UTF_8));
        if (bridge.ledger.hasRestored()) {
            sendSignal(
                    SIGNAL_RESTORE,
                    bridge.ledger.restoredCheckpointId(),
                    encodeBlobs(bridge.ledger.takeRestored()));
        }
        bridge.completions.resumeFrom(userTimers());
        bridge.completions.schedule();
    }

    /** The timer service of the stock operator (same name and serializers). */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private InternalTimerService<?> userTimers() {
        return getInternalTimerService(
                "user-timers", (TypeSerializer) VoidNamespaceSerializer.INSTANCE, (Triggerable) this);
    }

    /** The drain's step: Python fires the finished keys' timers itself; always keep ticking. */
    private boolean drainCompleted(long now) throws Exception {
        sendSignal(SIGNAL_DRAIN, now, NO_PAYLOAD);
        return true;
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId); // flushes every element before the barrier
        takeSnapshot(checkpointId);
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
        super.snapshotState(context);
        long checkpointId = context.getCheckpointId();
        if (snapshotCheckpointId != checkpointId) {
            // Not announced through prepareSnapshotPreBarrier: take the snapshot now.
            invokeFinishBundle();
            takeSnapshot(checkpointId);
        }
        bridge.store(snapshotLedger);
        snapshotLedger = null;
        snapshotCheckpointId = -1L;
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

    private void toBridge(boolean complete, long checkpointId) throws Exception {
        sendSignal(complete ? SIGNAL_COMPLETE : SIGNAL_ABORT, checkpointId, NO_PAYLOAD);
    }

    @Override
    public void close() throws Exception {
        if (bridge != null) { // the Python function is closed with the runner, after every callback
            bridge.close();
        }
        super.close();
    }

    @Override
    public <T> AbstractExternalDataStreamPythonFunctionOperator<T> copy(
            DataStreamPythonFunctionInfo pythonFunctionInfo, TypeInformation<T> outputTypeInfo) {
        CheckpointingExternalKeyedProcessOperator<T> copy =
                new CheckpointingExternalKeyedProcessOperator<>(
                        config,
                        pythonFunctionInfo,
                        (RowTypeInfo) getInputTypeInfo(),
                        outputTypeInfo);
        copy.setCompletionIntervalMs(completionIntervalMs);
        return copy;
    }

    /**
     * Runs the Python snapshot for {@code checkpointId} and keeps the ledger it returns. Every
     * element before the barrier must have been flushed already.
     */
    private void takeSnapshot(long checkpointId) throws Exception {
        if (!bridge.isOpen()) {
            throw new IllegalStateException(
                    "checkpoint " + checkpointId + " taken while the Python bridge is not open");
        }
        sendSignal(SIGNAL_SNAPSHOT, checkpointId, NO_PAYLOAD);
        // Timers the last bundles registered reach Java through the mailbox; register them now
        // so that they are part of this checkpoint too.
        drainUnregisteredTimers();
        snapshotLedger = takeReturnedLedger(checkpointId);
        snapshotCheckpointId = checkpointId;
    }

    /**
     * Sends a signal to the Python bridge and waits until it has been handled.
     *
     * <p>The bundle is finished first: Beam's Python data plane handles the timers of one message
     * before its data, so a signal could otherwise overtake earlier elements.
     */
    private void sendSignal(byte code, long checkpointId, byte[] payload) throws Exception {
        invokeFinishBundle();
        // Timer data layout: [type, watermark, timestamp, key, namespace]; the key is unused.
        Row signal = Row.of(code, Long.MIN_VALUE, checkpointId, null, payload);
        signalSerializer.serialize(signal, signalOut);
        pythonFunctionRunner.processTimer(signalBytes.toByteArray());
        signalBytes.reset();
        elementCount++;
        invokeFinishBundle();
    }

    /**
     * Reads (and clears) the ledger Python stored for {@code checkpointId}: the value is a
     * serialized byte array holding the id (8 bytes, big endian) followed by the ledger.
     */
    private byte[] takeReturnedLedger(long checkpointId) throws Exception {
        byte[] found = null;
        Iterator<Map.Entry<ByteArrayWrapper, byte[]>> entries = returnState.iterator();
        while (entries.hasNext()) {
            found = entries.next().getValue();
        }
        returnState.clear();
        if (found == null) {
            throw new IllegalStateException(
                    "the Python bridge returned no ledger for checkpoint " + checkpointId);
        }
        DataInputDeserializer in = new DataInputDeserializer(found);
        byte[] record = BytePrimitiveArraySerializer.INSTANCE.deserialize(in);
        in.setBuffer(record);
        long returnedId = in.readLong();
        if (returnedId != checkpointId) {
            throw new IllegalStateException(
                    "the Python bridge returned the ledger of checkpoint "
                            + returnedId
                            + " for checkpoint "
                            + checkpointId);
        }
        byte[] ledger = new byte[record.length - Long.BYTES];
        in.readFully(ledger);
        return ledger;
    }

    /** Frames blobs as [count][length, bytes]... (big-endian int32), read by Python. */
    private static byte[] encodeBlobs(List<byte[]> blobs) throws Exception {
        ByteArrayOutputStreamWithPos bytes = new ByteArrayOutputStreamWithPos();
        DataOutputViewStreamWrapper out = new DataOutputViewStreamWrapper(bytes);
        out.writeInt(blobs.size());
        for (byte[] blob : blobs) {
            out.writeInt(blob.length);
            out.write(blob);
        }
        return bytes.toByteArray();
    }

    /**
     * A {@link PythonFunction} whose serialized form loads the wrapped function through the
     * bridge loader: a pickle that calls {@code load_function(<original pickle>)}.
     */
    static final class BridgedPythonFunction implements PythonFunction {

        private static final long serialVersionUID = 1L;

        private final PythonFunction delegate;

        BridgedPythonFunction(PythonFunction delegate) {
            this.delegate = delegate;
        }

        /**
         * Returns {@code info} with its first function bridged. A chained info (built by PyFlink's
         * chaining optimizer from an operator of this class) already has a bridged first function
         * and is returned as is.
         */
        static DataStreamPythonFunctionInfo attach(DataStreamPythonFunctionInfo info) {
            DataStreamPythonFunctionInfo first = info;
            while (first.getInputs().length > 0) {
                first = (DataStreamPythonFunctionInfo) first.getInputs()[0];
            }
            if (first.getPythonFunction() instanceof BridgedPythonFunction) {
                return info;
            }
            if (first != info) {
                throw new IllegalArgumentException(
                        "a chained Python function whose first function is not bridged");
            }
            return new DataStreamPythonFunctionInfo(
                    new BridgedPythonFunction(info.getPythonFunction()), info.getFunctionType());
        }

        @Override
        public byte[] getSerializedPythonFunction() {
            byte[] original = delegate.getSerializedPythonFunction();
            String global = PYTHON_LOADER_MODULE + "\n" + PYTHON_LOADER_FUNCTION + "\n";
            ByteArrayOutputStream out = new ByteArrayOutputStream(original.length + 80);
            out.write(0x80); // PROTO 3
            out.write(3);
            out.write('c'); // GLOBAL module\nname\n
            byte[] name = global.getBytes(StandardCharsets.US_ASCII);
            out.write(name, 0, name.length);
            out.write('B'); // BINBYTES: int32 little-endian length, then the bytes
            for (int shift = 0; shift < 32; shift += 8) {
                out.write((original.length >>> shift) & 0xFF);
            }
            out.write(original, 0, original.length);
            out.write(0x85); // TUPLE1
            out.write('R'); // REDUCE: load_function(original)
            out.write('.'); // STOP
            return out.toByteArray();
        }

        @Override
        public PythonEnv getPythonEnv() {
            return delegate.getPythonEnv();
        }

        @Override
        public PythonFunctionKind getPythonFunctionKind() {
            return delegate.getPythonFunctionKind();
        }

        @Override
        public boolean takesRowAsInput() {
            return delegate.takesRowAsInput();
        }
    }
}
